import KevdConfig
import KevdSpec
import KevdEvent
import KevdInput

extension Daemon {
    /// Makes the input and ACPI sources match `new`: a changed table closes the old source first and opens the
    /// new one (devices are read again, their switches published again with `catchup`). A source that cannot
    /// start is reported as `kevd`/`error` and left off; the others keep working.
    func applyInput(_ new: Config) {
        if new.input != input?.spec {
            input = nil
            if let spec = new.input {
                do {
                    input = try InputSource(spec: spec, loop: loop, pipeline: pipeline, logger: logger)
                } catch {
                    reportError("cannot start the input source", error: "\(error)", component: "input")
                }
            }
        }
        if new.acpi != acpi?.spec {
            acpi = nil
            if let spec = new.acpi {
                do {
                    acpi = try AcpiSource(spec: spec, loop: loop, pipeline: pipeline, logger: logger)
                } catch {
                    reportError("cannot start the ACPI source", error: "\(error)", component: "acpi")
                }
            }
        }
    }
}

import KevdConfig
import KevdSpec
import KevdEvent
import KevdInput

/// The `[input]` and `[acpi]` sources the daemon runs (Daemon.inputSources).
final class InputSources {
    var input: InputSource?
    var acpi: AcpiSource?
}

extension Daemon {
    /// Makes the input and ACPI sources match `new`: a changed table closes the old source first and opens the
    /// new one (devices are read again, their switches published again with `catchup`). A source that cannot
    /// start is reported as `kevd`/`error` and left off; the others keep working.
    func applyInput(_ new: Config) {
        if new.input != inputSources.input?.spec {
            inputSources.input = nil
            if let spec = new.input {
                do {
                    inputSources.input = try InputSource(spec: spec, loop: loop, pipeline: pipeline, logger: logger)
                } catch {
                    reportSourceError("cannot start the input source", error: "\(error)", component: "input")
                }
            }
        }
        if new.acpi != inputSources.acpi?.spec {
            inputSources.acpi = nil
            if let spec = new.acpi {
                do {
                    inputSources.acpi = try AcpiSource(spec: spec, loop: loop, pipeline: pipeline, logger: logger)
                } catch {
                    reportSourceError("cannot start the ACPI source", error: "\(error)", component: "acpi")
                }
            }
        }
    }

    private func reportSourceError(_ message: String, error: String, component: String) {
        var data = EventData()
        data.append("message", message)
        data.append("error", error)
        logger.error("\(message)", metadata: ["error": "\(error)"])
        pipeline.publishKevd("error", component: component, data)
    }
}

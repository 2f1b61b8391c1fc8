import Testing

/// Rules/40-power-button.toml and Rules/41-lid.toml, as shipped: checked clean, and dry runs of the events the
/// input and ACPI sources publish (their real runs, from a real power button and uinput lid switches, are the
/// test bed's input scenario, Tests/VM/scenarios/input.py: this host has no /dev/uinput and no ACPI button).
@Suite("example rules: power button and lid")
struct ExampleInputRulesTests {
    static let press = #"{"source":"input","type":"press","key":"power","data":{"code":116,"name":"KEY_POWER","value":1,"device":"Power Button","devnode":"/dev/input/event0","phys":"LNXPWRBN/button/input0"}}"#
    static let release = #"{"source":"input","type":"release","key":"power","data":{"code":116,"name":"KEY_POWER","value":0,"device":"Power Button"}}"#
    static let acpi = #"{"source":"acpi","type":"button/power","key":"LNXPWRBN:00","data":{"device_class":"button/power","bus_id":"LNXPWRBN:00","type":"00000080","data":"00000001"}}"#
    static let acAdapter = #"{"source":"acpi","type":"ac_adapter","key":"ACPI0003:00","data":{"device_class":"ac_adapter","bus_id":"ACPI0003:00","type":"00000080","data":"00000001"}}"#
    static let lidClosed = #"{"source":"input","type":"switch","key":"lid","data":{"code":0,"name":"SW_LID","value":1,"state":true,"device":"Lid Switch"}}"#
    static let lidAtStart = #"{"source":"input","type":"switch","key":"lid","data":{"code":0,"name":"SW_LID","value":0,"state":false,"device":"Lid Switch","catchup":true}}"#

    @Test("40-power-button: the input press and the ACPI notification each run one rule; a release runs none")
    func powerButton() throws {
        let file = ExampleRules.directory + "/40-power-button.toml"
        let check = try kevctl(["rules", "check", file])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        let results = try ExampleRules.dryRun([file], [Self.press, Self.release, Self.acpi, Self.acAdapter])
        let matched = results.filter { $0["match"] as? Bool == true }.map { $0["rule"] as? String }
        #expect(matched == ["power-button", "acpi-power-button"])
    }

    @Test("41-lid: a change and a position read at start both run the lid rule; a key does not")
    func lid() throws {
        let file = ExampleRules.directory + "/41-lid.toml"
        let check = try kevctl(["rules", "check", file])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        let results = try ExampleRules.dryRun([file], [Self.lidClosed, Self.lidAtStart, Self.press])
        #expect(results.map { $0["match"] as? Bool } == [true, true, false])
    }
}

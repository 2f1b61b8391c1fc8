import Testing
@testable import KevdSchedule

@Suite("Cron parsing")
struct CronParseTests {
    @Test(
        "equivalent spellings parse to equal schedules",
        arguments: [
            ("@daily", "0 0 * * *"),
            ("@midnight", "0 0 * * *"),
            ("@hourly", "0 * * * *"),
            ("@weekly", "0 0 * * 0"),
            ("@monthly", "0 0 1 * *"),
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
            ("@DAILY", "0 0 * * *"),
            ("  @hourly\t", "0 * * * *"),
            ("0 0 * * 7", "0 0 * * 0"),
            ("0 0 * * sun", "0 0 * * 0"),
            ("0 0 * * SUN", "0 0 * * 0"),
            ("0 0 * * 5-7", "0 0 * * 0,5,6"),
            ("0 0 * * fri-sun", "0 0 * * 0,5,6"),
            ("0 0 * * mon-fri", "0 0 * * 1-5"),
            ("0 0 * jan-mar *", "0 0 * 1-3 *"),
            ("0 0 * Jan,JUN,dec *", "0 0 * 1,6,12 *"),
            ("*/15 * * * *", "0,15,30,45 * * * *"),
            ("10-50/20 * * * *", "10,30,50 * * * *"),
            ("5/15 * * * *", "5,20,35,50 * * * *"),
            ("0 */6 * * *", "0 0,6,12,18 * * *"),
            ("0 0 * */3 *", "0 0 * 1,4,7,10 *"),
            ("0 0 * * 1-7/2", "0 0 * * 0,1,3,5"),
            ("\t0   0  *\t* *  ", "0 0 * * *"),
            ("0-59 0-23 * * *", "* * * * *"),
        ] as [(String, String)]
    )
    func equivalent(a: String, b: String) throws {
        #expect(try CronSchedule(parsing: a) == CronSchedule(parsing: b))
    }

    @Test("a field starting with '*' is unrestricted for the day rule even when stepped")
    func starFlag() throws {
        // Same day sets, but "*/2" keeps Vixie's AND rule while "0,2,4,6" switches to OR.
        #expect(try CronSchedule(parsing: "0 0 1 * */2") != CronSchedule(parsing: "0 0 1 * 0,2,4,6"))
        #expect(try CronSchedule(parsing: "0 0 1-31 * *") != CronSchedule(parsing: "0 0 * * *"))
        #expect(try CronSchedule(parsing: "0 0 1 * *") != CronSchedule(parsing: "0 0 2 * *"))
    }

    @Test(
        "errors name the field and the character offset",
        arguments: [
            ("", nil, 0, "empty"),
            ("   ", nil, 3, "empty"),
            ("* * * *", .dayOfWeek, 7, "missing day-of-week field"),
            ("*", .hour, 1, "missing hour field"),
            ("* * * * * *", nil, 10, "too many fields"),
            ("60 * * * *", .minute, 0, "value 60 is out of range 0-59"),
            ("* 24 * * *", .hour, 2, "out of range 0-23"),
            ("* * 0 * *", .dayOfMonth, 4, "out of range 1-31"),
            ("* * 32 * *", .dayOfMonth, 4, "out of range 1-31"),
            ("* * * 13 *", .month, 6, "out of range 1-12"),
            ("* * * * 8", .dayOfWeek, 8, "out of range 0-7"),
            ("5-1 * * * *", .minute, 0, "ends before it starts"),
            ("*/0 * * * *", .minute, 2, "step 0"),
            ("*/61 * * * *", .minute, 2, "step 61"),
            ("* * * * 1-5/9", .dayOfWeek, 12, "step 9"),
            ("1/ * * * *", .minute, 2, "step number"),
            ("1,,2 * * * *", .minute, 2, "empty list item"),
            ("1, * * * *", .minute, 2, "empty list item"),
            (",1 * * * *", .minute, 0, "empty list item"),
            ("* * * foo *", .month, 6, "unknown name 'foo'"),
            ("* * * * mon-funday", .dayOfWeek, 12, "unknown name 'funday'"),
            ("* * * * january", .dayOfWeek, 8, "unknown name 'january'"),
            ("jan * * * *", .minute, 0, "names are not allowed"),
            ("* * * jan-mon *", .month, 10, "unknown name 'mon'"),
            ("*-5 * * * *", .minute, 1, "unexpected '-'"),
            ("1.5 * * * *", .minute, 1, "unexpected '.'"),
            ("0 0 * * 1-", .dayOfWeek, 10, "expected a number"),
            ("0 0 * * #", .dayOfWeek, 8, "found '#'"),
            ("99999999999999999999 * * * *", .minute, 0, "out of range"),
            ("0 \u{00E9}t\u{00E9} * * *", .hour, 2, "names are not allowed"),
            ("0 0 * * * \u{00B5}", nil, 10, "too many fields"),
            ("@hourl", nil, 0, "unknown macro '@hourl'"),
            ("  @reboot", nil, 2, "@reboot"),
            ("@daily x", nil, 7, "unexpected text after @daily"),
            ("@ 0 0 * * *", nil, 0, "unknown macro"),
        ] as [(String, CronParseError.Field?, Int, String)]
    )
    func errors(text: String, field: CronParseError.Field?, offset: Int, fragment: String) {
        #expect(throws: CronParseError.self) { try CronSchedule(parsing: text) }
        do {
            _ = try CronSchedule(parsing: text)
        } catch {
            #expect(error.field == field, "\(text.debugDescription): \(error)")
            #expect(error.offset == offset, "\(text.debugDescription): \(error)")
            #expect(error.message.contains(fragment), "\(text.debugDescription): \(error)")
            if let field { #expect(error.description.hasPrefix("\(field.rawValue) field: ")) }
        }
    }

    @Test("the leftmost bad field is reported first")
    func leftmostError() {
        do {
            _ = try CronSchedule(parsing: "60 24 32 13 8")
            Issue.record("expected an error")
        } catch {
            #expect(error.field == .minute)
            #expect(error.offset == 0)
        }
    }
}

import ArgumentParser
import Glibc
import KevdClient
import KevdEvent

/// `kevctl wait`: block until the first matching event, print it, exit; for scripts, like inotifywait.
struct WaitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wait",
        abstract: "Wait for the first event that matches, print it and exit.",
        discussion: """
            Prints the event in --format: json, text or env, as `kevctl subscribe
            --help` describes them.

            To act on a state without missing a change made while you check it,
            read the head seq first, check, then wait from the seq after it (the
            journal is searched first, then the live stream, nothing missed):
              seq=$(kevctl status --json | jq .head)
              test -e /srv/ready ||
                  kevctl wait --from $((seq + 1)) type=create key=/srv/ready

            Exit codes (inotifywait's): 0 an event matched and was printed; 1 an
            error (no daemon, a bad filter, a refused request, kevd closed the
            connection); 2 --timeout passed first. A bad command line (an unknown
            option, no filter term) exits 64.
            """)

    @OptionGroup var client: ClientOptions

    @Option(help: ArgumentHelp(
        "Give up after this long: seconds (0.5, 30) or a duration (250ms, 2m). Default: wait forever.",
        valueName: "seconds"))
    var timeout: String?

    @Option(help: ArgumentHelp(
        "Where to start looking: all, new, a seq, an RFC 3339 time, or a duration ago (10m). Default: new.",
        valueName: "start"))
    var from: String?

    @Option(help: "json, text or env.")
    var format: EventOutputFormat = .json

    @Argument(help: "Filter terms; all must match.")
    var filters: [String]

    func run() throws {
        var timedOut = false
        try reportingFailures {
            try checkFilter(filters)
            let start = try from.map(parseStart)
            // The deadline covers connecting and subscribing too: it is the caller's whole budget.
            let deadline = try timeout.map { try KevctlDeadline.after($0, option: "--timeout") }
            signal(SIGPIPE, SIG_IGN)
            let connection = try client.connect()
            do {
                _ = try connection.subscribe(filter: filters, from: start, deadline: deadline)
                while true {
                    guard let message = try connection.next(deadline: deadline) else {
                        throw Failure("kevd closed the connection before a matching event")
                    }
                    switch message {
                    case .event(let received):
                        var out: [UInt8] = []
                        format.append(received, to: &out)
                        // A closed stdout is not an error here: the event happened, which is the answer.
                        _ = writeStdout(out)
                        return
                    case .gap(let gap):
                        Output.error(
                            "kevctl: warning: events \(gap.from) to \(gap.to) were lost before they could be searched"
                                + (gap.reason.isEmpty ? "" : " (\(gap.reason))"))
                    case .reply(let reply):
                        guard reply.ok else { throw KevdClientError.server(reply.error ?? reply.value.jsonText) }
                    }
                }
            } catch KevdClientError.timedOut {
                timedOut = true
            }
        }
        if timedOut { throw ExitCode(2) }
    }
}

// The server module; see docs/PROTOCOL.md.

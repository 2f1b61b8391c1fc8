import KevctlCommands

// kevctl on its own (what `swift build` makes for development and the tests); installed, kevctl is a link to the
// multi-call kevd, which runs the same commands.
KevctlEntry.main()

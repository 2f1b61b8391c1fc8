extension JournalReader.Record {
    /// Whether the payload holds `needle` byte for byte: the cheap test that lets a journal fold decode only the
    /// few records that can be the ones it looks for (`"source":"timer"`, `"type":"started"`).
    public func payloadContains(_ needle: [UInt8]) -> Bool {
        let haystack = payload
        guard haystack.count >= needle.count, let first = needle.first else { return false }
        var i = 0
        let last = haystack.count - needle.count
        while i <= last {
            if haystack[i] == first {
                var j = 1
                while j < needle.count && haystack[i + j] == needle[j] { j += 1 }
                if j == needle.count { return true }
            }
            i += 1
        }
        return false
    }
}

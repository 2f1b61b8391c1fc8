import KevdTestSupport
import Testing

import KevdEvent

@Suite struct ByteTextTests {
    @Test(arguments: [
        [], Array("plain".utf8), Array("é😀日本".utf8), [0xEF, 0xBF, 0xBD], Array("a\u{FFFD}b\u{FFFD}".utf8),
        [0x00, 0x7F], Array("\u{10FFFF}\u{FFFF}".utf8),
    ] as [[UInt8]])
    func validBytesAreLossless(_ bytes: [UInt8]) {
        let text = ByteText(bytes)
        #expect(text.isLossless)
        #expect(Array(text.string.utf8) == bytes)
    }

    @Test(arguments: [
        ([0xFF], "\u{FFFD}"),
        ([0x66, 0xFF, 0xFE, 0x0A, 0x24, 0x28], "f\u{FFFD}\u{FFFD}\n$("),
        // A truncated 4-byte sequence repairs to one U+FFFD of the same length: the byte count alone is no proof.
        ([0xF0, 0x9F, 0x98], "\u{FFFD}"),
        ([0xEF, 0xBF], "\u{FFFD}"),
        ([0xC0, 0xAF], "\u{FFFD}\u{FFFD}"),
        ([0xED, 0xA0, 0x80], "\u{FFFD}\u{FFFD}\u{FFFD}"),
        ([0x61, 0x80, 0x62], "a\u{FFFD}b"),
    ] as [([UInt8], String)])
    func invalidBytesAreRepaired(_ bytes: [UInt8], _ repaired: String) {
        let text = ByteText(bytes)
        #expect(!text.isLossless)
        #expect(text.string.unicodeScalars.elementsEqual(repaired.unicodeScalars))
    }

    @Test func agreesWithStrictValidationOnRandomBytes() {
        var rng = SplitMix64(seed: 0xB17E)
        // Bias toward bytes that form or almost form multi-byte sequences, U+FFFD's own bytes included.
        let alphabet: [UInt8] = [0x41, 0x00, 0x7F, 0x80, 0xBF, 0xBD, 0xC2, 0xC0, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xFF]
        var lossy = 0
        for _ in 0..<20_000 {
            let bytes = (0..<Int.random(in: 0...8, using: &rng)).map { _ in
                Bool.random(using: &rng) ? alphabet.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng)
            }
            let valid = String(validating: bytes, as: UTF8.self) != nil
            let text = ByteText(bytes)
            #expect(text.isLossless == valid)
            #expect(text.isLossless == Array(text.string.utf8).elementsEqual(bytes))
            if !valid { lossy += 1 }
        }
        #expect(lossy > 1000 && lossy < 19_000)
    }
}

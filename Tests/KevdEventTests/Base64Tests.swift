import Foundation
import KevdTestSupport
import Testing

import KevdEvent

@Suite struct Base64Tests {
    @Test(arguments: [
        ("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ])
    func rfc4648Vectors(_ input: String, _ expected: String) {
        #expect(Base64.encode(Array(input.utf8)) == expected)
    }

    @Test func everyByteValueUsesTheStandardAlphabet() {
        let bytes = (0...255).map { UInt8($0) }
        #expect(Base64.encode(bytes) == Data(bytes).base64EncodedString())
        #expect(Base64.encode([0xFB, 0xFF, 0xBF]) == "+/+/")
    }

    @Test func matchesFoundationForRandomBytes() {
        var rng = SplitMix64(seed: 64)
        for length in 0...100 {
            for _ in 0..<20 {
                let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let expected = Data(bytes).base64EncodedString()
                #expect(Base64.encode(bytes) == expected)
                #expect(Base64.encodedCount(length) == expected.utf8.count)
                // A non-contiguous, non-random-access input takes the same iterator path.
                #expect(Base64.encode(bytes.lazy.map { $0 }) == expected)
                var appended: [UInt8] = [0x21]
                Base64.append(bytes[...], to: &appended)
                #expect(appended == [0x21] + Array(expected.utf8))
            }
        }
    }
}

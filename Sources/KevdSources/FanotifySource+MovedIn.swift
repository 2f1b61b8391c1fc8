import KevdEvent
import KevdKernel

/// A directory moved into a tree from outside it: what it holds is reported as synthetic creates
/// (`"synthetic": true`), as the inotify source reports a directory that appears, so rules cannot tell the
/// backends apart. fanotify needs no watch on it (the file-system mark sees inside it at once); only the listing.
///
/// The listing runs on the loop a slice at a time (at most `listingSliceNanoseconds` of work per turn, woken by
/// an eventfd), so a big tree moved in never holds the loop. Each entry is reported once: a real create read
/// before the listing reaches the entry is remembered (`reportedWhileListing`) and the listing skips it; a real
/// create queued before the listing found the entry, and read after, is dropped (`synthesized`). Once the listing
/// is over and a read has emptied the queue, every such create has been read, and both sets are cleared.
extension FanotifySource {
    static let listingSliceNanoseconds: UInt64 = 4_000_000

    struct ListingItem {
        let path: String
        /// The root's index: a reload renumbers roots, and drops the listing (`configure`).
        let root: Int
    }

    var listingActive: Bool { !listing.isEmpty }

    func registerListing() throws {
        try loop.register(fd: listingWakeup.fd.rawValue, events: .readable, priority: .kernelInput) {
            [unowned self] _ in
            _ = try? self.listingWakeup.drain()
            self.listingSlice()
        }
    }

    /// Root `index` gained the directory at `path` by a move from outside: list it (and below it).
    func announceMovedIn(_ path: String, root index: Int) {
        guard roots[index].spec.recursive else { return }
        if listing.isEmpty { listingWakeup.signal() }
        listing.append(ListingItem(path: path, root: index))
    }

    func listingSlice() {
        let started = Clock.monotonicNanoseconds()
        while let item = listing.popLast() {
            list(item)
            if Clock.monotonicNanoseconds() &- started >= Self.listingSliceNanoseconds { break }
        }
        if listing.isEmpty {
            listingSettling = true
        } else {
            listingWakeup.signal()
        }
    }

    private func list(_ item: ListingItem) {
        guard item.root < roots.count else { return }
        let root = roots[item.root]
        guard let entries = try? DirectoryListing.entries(of: item.path) else { return }  // Gone again.
        var subdirectories: [ListingItem] = []
        for entry in entries {
            let name = ByteText(entry.name)
            let child = InotifySource.join(item.path, name.string)
            if root.excludes(path: child, name: name.string) { continue }
            let isDirectory = entry.isDirectory ?? (FileKind.of(child) == .directory)
            if isDirectory { subdirectories.append(ListingItem(path: child, root: item.root)) }
            if reportedWhileListing.contains(child) { continue }
            synthesized.insert(child)
            entry.name.withUnsafeBufferPointer {
                emit(.create, root: item.root, directory: item.path, path: child, nameBytes: $0, name: name,
                    isDirectory: isDirectory, pid: 0, synthetic: true)
            }
        }
        // Reversed, so the stack pops them in listing order.
        listing.append(contentsOf: subdirectories.reversed())
    }

    /// After a read: once the listing is over and the queue was emptied, the dedup sets have done their job.
    func settleListing(queueEmptied: Bool) {
        guard listingSettling, queueEmptied, listing.isEmpty else { return }
        listingSettling = false
        synthesized.removeAll()
        reportedWhileListing.removeAll()
    }

    /// A reload renumbers the roots: a listing in progress is dropped (the roots it was for may be gone).
    func dropListing() {
        listing.removeAll()
        listingSettling = !synthesized.isEmpty || !reportedWhileListing.isEmpty
    }
}

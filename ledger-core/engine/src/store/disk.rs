//! The file layer under the embedded store, snapshots and the read models: exactly the
//! file operations the store, its recovery scan, snapshots and the read models' database
//! use, behind an object-safe trait, so that tests can put the store
//! on a simulated disk (`sim_disk`, feature `sim`) that loses unsynced writes, tears
//! writes and injects faults. [`RealDisk`] is `std::fs`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file of a [`Disk`].
pub trait DiskFile: Send + Sync + fmt::Debug {
    /// Appends all of `bytes` at the end of the file (the file was opened for append).
    fn append_all(&self, bytes: &[u8]) -> io::Result<()>;
    /// Writes all of `bytes` at `offset` (a file opened by [`Disk::open_read_write`]).
    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// Fills `buffer` from `offset`; a short file is `UnexpectedEof`.
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()>;
    /// Cuts (or extends with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`: the data written before it is durable once it returns.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`: data and metadata (not the file's directory entry).
    fn sync_all(&self) -> io::Result<()>;
    /// The file's length in bytes.
    fn file_len(&self) -> io::Result<u64>;
    /// Tells the OS that the synced bytes from `offset` on (`len` of them, or to the
    /// end of the file if `None`) will not be read soon, so their pages may leave its
    /// cache (`posix_fadvise(DONTNEED)`). Only advice: the file's content is unchanged,
    /// so a disk without a cache does nothing.
    fn drop_cached(&self, _offset: u64, _len: Option<u64>) -> io::Result<()> {
        Ok(())
    }
}

/// Held while a directory's store is open; dropping it releases the lock.
pub trait DiskLock: Send + Sync {}

/// Why [`Disk::lock`] failed.
#[derive(Debug)]
pub enum LockError {
    /// Another holder has the lock.
    WouldBlock,
    /// The lock file could not be opened or created.
    Open(io::Error),
    /// Taking the lock failed for another reason than another holder.
    Lock(io::Error),
}

/// The file operations of the embedded store. Paths are absolute or relative to the
/// process's directory, as `std::fs` takes them.
pub trait Disk: Send + Sync {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of `dir` that are valid UTF-8 (others are not ours).
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// The whole content of a file into `buffer`, at the range returned (what the
    /// buffer held is replaced), for a pass that reads each file once (a whole-log
    /// scan): the buffer's memory is reused from file to file, and the file's pages need
    /// not stay in the page cache.
    fn read_once(&self, path: &Path, buffer: &mut Vec<u8>) -> io::Result<Range<usize>> {
        *buffer = self.read(path)?;
        Ok(0..buffer.len())
    }
    /// Opens an existing file for reading and appending.
    fn open_append(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>>;
    /// Opens the existing file `path` for writes past the page cache (`O_DIRECT`:
    /// whole blocks of [`DIRECT_ALIGN`] bytes, from memory and at offsets aligned to
    /// it), or `None` where there are none: a file system that refuses them (tmpfs),
    /// or a disk without a page cache (the simulated one). The log's committer then
    /// appends through the file [`Disk::open_append`] gives.
    fn open_direct(&self, _path: &Path) -> io::Result<Option<Arc<dyn DiskFile>>> {
        Ok(None)
    }
    /// Creates a file that must not exist yet, for reading and appending.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>>;
    /// Opens `path` for reading and writing at any offset, created empty if missing
    /// (the read models' database file).
    fn open_read_write(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>>;
    /// Makes the entries of `dir` (files created or removed in it) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to` in the same directory, replacing `to` (atomic; durable
    /// once the directory is synced).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Takes the exclusive lock on the file `path` (created if missing) without waiting.
    fn lock(&self, path: &Path) -> Result<Box<dyn DiskLock>, LockError>;
}

/// The alignment, in bytes, of the memory, offsets and lengths of reads and writes
/// with `O_DIRECT` (a multiple of any block size the file system has).
pub const DIRECT_ALIGN: usize = 4_096;
/// Bytes a direct read's buffer grows by when the file grew while it was read.
const DIRECT_GROW: usize = 1 << 20;

/// The whole content of `file`, opened with `O_DIRECT` and `len` bytes long when its
/// length was read, read into `buffer` at an aligned place, whose range is returned.
/// Reads whole blocks at aligned offsets until one comes back short: the end of the
/// file, however much it grew meanwhile.
fn read_direct(mut file: File, buffer: &mut Vec<u8>, len: u64) -> io::Result<Range<usize>> {
    use std::io::Read;
    let len = usize::try_from(len).map_err(io::Error::other)?;
    // One block more than the file: a read that fills it all is not taken for the end.
    let wanted = len.next_multiple_of(DIRECT_ALIGN) + 2 * DIRECT_ALIGN;
    if buffer.len() < wanted {
        buffer.resize(wanted, 0);
    }
    let mut start = buffer.as_ptr().align_offset(DIRECT_ALIGN);
    let mut filled = 0;
    loop {
        let room = (buffer.len() - start - filled) / DIRECT_ALIGN * DIRECT_ALIGN;
        if room == 0 {
            // The file grew: a larger buffer, and the bytes read moved to its new
            // aligned place.
            buffer.resize(buffer.len() + DIRECT_GROW, 0);
            let moved = buffer.as_ptr().align_offset(DIRECT_ALIGN);
            buffer.copy_within(start..start + filled, moved);
            start = moved;
            continue;
        }
        let read = file.read(&mut buffer[start + filled..start + filled + room])?;
        filled += read;
        if read == 0 || !read.is_multiple_of(DIRECT_ALIGN) {
            return Ok(start..start + filled);
        }
    }
}

/// `path` opened with `options` and `O_DIRECT`, or `None` where the file system
/// refuses `O_DIRECT` (tmpfs).
fn open_direct(options: &mut OpenOptions, path: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match options.custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32).open(path) {
        Ok(file) => Ok(Some(file)),
        Err(error) if error.kind() == io::ErrorKind::InvalidInput => Ok(None),
        Err(error) => Err(error),
    }
}

/// A step of [`replace_file`] that failed: what it did, on which path, and why.
#[derive(Debug)]
pub struct ReplaceFailed {
    pub operation: &'static str,
    pub path: PathBuf,
    pub error: io::Error,
}

impl fmt::Display for ReplaceFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.operation, self.path.display(), self.error)
    }
}

/// Writes `bytes` as the file `path`, whole or not at all: into `<path>.tmp` (one a
/// crash left is removed first), synced, renamed over `path`, and the directory synced.
pub fn replace_file(disk: &dyn Disk, path: &Path, bytes: &[u8]) -> Result<(), ReplaceFailed> {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    let temporary = PathBuf::from(name);
    fn failed(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ReplaceFailed {
        let path = path.to_path_buf();
        move |error| ReplaceFailed { operation, path, error }
    }
    match disk.remove_file(&temporary) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(failed("remove", &temporary)(error)),
        _ => {}
    }
    let file = disk.create_new(&temporary).map_err(failed("create", &temporary))?;
    file.append_all(bytes).map_err(failed("write", &temporary))?;
    file.sync_all().map_err(failed("fsync", &temporary))?;
    drop(file);
    disk.rename(&temporary, path).map_err(failed("rename", &temporary))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    disk.sync_dir(dir).map_err(failed("fsync directory", dir))
}

/// The real file system (`std::fs`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RealDisk;

#[derive(Debug)]
struct RealFile(File);

impl DiskFile for RealFile {
    fn append_all(&self, bytes: &[u8]) -> io::Result<()> {
        (&self.0).write_all(bytes)
    }

    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(bytes, offset)
    }

    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buffer, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn file_len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn drop_cached(&self, offset: u64, len: Option<u64>) -> io::Result<()> {
        let len = len.and_then(std::num::NonZeroU64::new);
        rustix::fs::fadvise(&self.0, offset, len, rustix::fs::Advice::DontNeed).map_err(io::Error::from)
    }
}

struct RealLock(#[allow(dead_code)] File);

impl DiskLock for RealLock {}

impl Disk for RealDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    /// Read past the page cache (`O_DIRECT`) where the file system allows it: the disk
    /// writes straight into `buffer`, so the kernel neither fills pages of its cache
    /// (each zeroed first) nor copies them out: those were a fifth of a whole-log
    /// scan's time. Elsewhere (tmpfs refuses `O_DIRECT`), a read through the cache.
    fn read_once(&self, path: &Path, buffer: &mut Vec<u8>) -> io::Result<Range<usize>> {
        use std::io::Read;
        if let Some(file) = open_direct(OpenOptions::new().read(true), path)? {
            match file.metadata().and_then(|meta| read_direct(file, buffer, meta.len())) {
                Err(error) if error.kind() == io::ErrorKind::InvalidInput => {}
                read => return read,
            }
        }
        let mut file = File::open(path)?;
        buffer.clear();
        file.read_to_end(buffer)?;
        // Advice only: the content read is what counts.
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        Ok(0..buffer.len())
    }

    fn open_append(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let file = OpenOptions::new().read(true).append(true).open(path)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn open_direct(&self, path: &Path) -> io::Result<Option<Arc<dyn DiskFile>>> {
        let file = open_direct(OpenOptions::new().write(true), path)?;
        Ok(file.map(|file| Arc::new(RealFile(file)) as Arc<dyn DiskFile>))
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let file = OpenOptions::new().read(true).append(true).create_new(true).open(path)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn open_read_write(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn lock(&self, path: &Path) -> Result<Box<dyn DiskLock>, LockError> {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(LockError::Open)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(RealLock(file))),
            Err(fs::TryLockError::WouldBlock) => Err(LockError::WouldBlock),
            Err(fs::TryLockError::Error(error)) => Err(LockError::Lock(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` bytes in which a byte out of place shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn read_once_gives_the_whole_file_whatever_its_length_and_what_the_buffer_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut buffer = Vec::new();
        // Longer, then shorter than the buffer already is; on and off block bounds.
        for len in [0, 1, 4_095, 4_096, 4_097, 3 * DIRECT_ALIGN + 17, 1_000_000, 10] {
            let path = dir.path().join(format!("{len}.seg"));
            fs::write(&path, pattern(len)).expect("write");
            let range = RealDisk.read_once(&path, &mut buffer).expect("read");
            assert_eq!(buffer[range], pattern(len)[..], "a file of {len} bytes");
        }
    }

    #[test]
    fn a_direct_read_of_a_file_that_grew_grows_its_buffer_and_reads_to_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("grown.seg");
        let content = pattern(3 * DIRECT_GROW + 12_345);
        fs::write(&path, &content).expect("write");
        // A file system that refuses O_DIRECT (tmpfs) has no direct read to check;
        // `read_once` reads through the page cache there (the test above).
        let Some(file) = open_direct(OpenOptions::new().read(true), &path).expect("open") else { return };
        let mut buffer = vec![7; 5];
        // As if the file had been empty when its length was read.
        let range = read_direct(file, &mut buffer, 0).expect("read");
        assert_eq!((buffer.as_ptr() as usize + range.start) % DIRECT_ALIGN, 0, "read at an aligned address");
        assert_eq!(buffer[range], content[..]);
    }
}

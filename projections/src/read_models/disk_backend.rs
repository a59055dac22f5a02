//! redb's storage on the engine's file layer (`ledger_engine::store::disk`), so that the
//! read models can live on the simulated disk of the power-loss simulator exactly as
//! the log does. `ledgerd` uses redb's own file backend.

use std::io;
use std::sync::Arc;

use ledger_engine::store::disk::DiskFile;

#[derive(Debug)]
pub(super) struct DiskBackend(pub(super) Arc<dyn DiskFile>);

impl redb::StorageBackend for DiskBackend {
    fn len(&self) -> io::Result<u64> {
        self.0.file_len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }
}

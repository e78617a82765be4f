//! One server per data directory. The server holds an exclusive lock on
//! `DATA_DIR/siyu.lock` while it runs (the operating system drops it if the process
//! dies, `kill -9` included) and writes its address into the file, so a command such
//! as `siyu import` can tell that a server owns the directory and talk to it instead of
//! writing behind its back.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

pub const LOCK_FILE: &str = "siyu.lock";

pub struct DataDirLock {
    file: File,
}

impl DataDirLock {
    pub fn acquire(data_dir: &Path) -> anyhow::Result<DataDirLock> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let path = data_dir.join(LOCK_FILE);
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                anyhow::bail!(
                    "another Siyu server is using the data directory {} ({}); stop it first, or give this one another --data-dir",
                    data_dir.display(),
                    holder.trim()
                );
            }
            Err(TryLockError::Error(e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
        file.set_len(0)?;
        writeln!(file, "pid {}", std::process::id())?;
        Ok(DataDirLock { file })
    }

    /// Records where the server listens, for commands run beside it.
    pub fn record_address(&self, addr: SocketAddr) {
        let mut file = &self.file;
        let result = file.set_len(0).and_then(|()| file.seek(SeekFrom::Start(0))).and_then(|_| writeln!(file, "pid {} http://{addr}", std::process::id()));
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not record the server's address in the data directory");
        }
    }
}

/// The address of the server running on `data_dir`, if one is: the lock is held and
/// the file names the address. A server that holds the lock but has not written its
/// address yet (it is starting) is waited for, up to a minute: a caller must never
/// write behind a server's back.
pub fn running_server(data_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = data_dir.join(LOCK_FILE);
    let Ok(mut file) = OpenOptions::new().read(true).write(true).open(&path) else { return Ok(None) };
    match file.try_lock() {
        // Nobody holds it: no server runs here.
        Ok(()) => {
            let _ = file.unlock();
            Ok(None)
        }
        Err(TryLockError::WouldBlock) => {
            for _ in 0..600 {
                let mut text = String::new();
                file.seek(SeekFrom::Start(0))?;
                file.read_to_string(&mut text)?;
                if let Some(addr) = text.split_whitespace().find(|w| w.starts_with("http://")) {
                    return Ok(Some(addr.to_string()));
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            anyhow::bail!("a server holds {} but has not said where it listens; wait until it has started", path.display())
        }
        Err(TryLockError::Error(e)) => Err(e).with_context(|| format!("checking {}", path.display())),
    }
}

//! A shim over the VFS SQLite runs on under WASI. The amalgamation's minimal VFS
//! (`wasm32-wasi-vfs.c`, which libsqlite3-sys compiles for wasm32-wasi) answers every
//! file-control request with `SQLITE_OK`. SQLite asks the VFS first about every `PRAGMA`
//! (`SQLITE_FCNTL_PRAGMA`) and, told it was handled, compiles it to a statement with no rows and a
//! NULL column name: every pragma on a database file came back empty, and reading its column name
//! panicked. The shim is the same VFS, registered as the default, whose files answer
//! `SQLITE_NOTFOUND` ("not a request for this VFS") to every file control, as SQLite's Unix VFS
//! does for the requests it does not know. The minimal VFS also leaves SQLite's random seed
//! unfilled, so `random()` and `randomblob()` would repeat in every fresh instance; the shim fills
//! it from the host's random source (WASI `random_get`, through the standard library's hash keys).
//!
//! Not needed natively (the unit tests run on SQLite's Unix VFS); `install` is then a no-op.

#[cfg(target_os = "wasi")]
mod shim {
    use std::cell::UnsafeCell;
    use std::ffi::{c_char, c_int, c_void};
    use std::mem::MaybeUninit;
    use std::sync::Once;

    use rusqlite::ffi;

    /// A static SQLite keeps a pointer to. The guest is single-threaded, and each is written once,
    /// inside `Once`, before SQLite can read it.
    struct Slot<T>(UnsafeCell<MaybeUninit<T>>);
    // SAFETY: written once under `Once` before any reader exists; read-only afterwards.
    unsafe impl<T> Sync for Slot<T> {}

    static VFS: Slot<ffi::sqlite3_vfs> = Slot(UnsafeCell::new(MaybeUninit::uninit()));
    static IO: Slot<ffi::sqlite3_io_methods> = Slot(UnsafeCell::new(MaybeUninit::uninit()));
    static IO_READY: Once = Once::new();

    pub fn install() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            // SAFETY: plain calls into SQLite; `base` is SQLite's static VFS (never freed), and
            // VFS is written before it is registered.
            unsafe {
                ffi::sqlite3_initialize();
                let base = ffi::sqlite3_vfs_find(std::ptr::null());
                if base.is_null() {
                    return;
                }
                let mut vfs = *base;
                vfs.zName = c"caxton-wasi".as_ptr();
                vfs.pNext = std::ptr::null_mut();
                vfs.pAppData = base.cast::<c_void>();
                vfs.xOpen = Some(open);
                vfs.xRandomness = Some(randomness);
                let slot = (*VFS.0.get()).write(vfs);
                ffi::sqlite3_vfs_register(slot, 1);
            }
        });
    }

    /// Opens the file with the wrapped VFS, then gives it the same methods but `file_control`.
    unsafe extern "C" fn open(
        vfs: *mut ffi::sqlite3_vfs,
        name: *const c_char,
        file: *mut ffi::sqlite3_file,
        flags: c_int,
        out_flags: *mut c_int,
    ) -> c_int {
        // SAFETY: SQLite calls this with the VFS registered in `install`, whose pAppData is the
        // wrapped VFS, and a `file` of the wrapped VFS's szOsFile bytes.
        unsafe {
            let base = (*vfs).pAppData.cast::<ffi::sqlite3_vfs>();
            let Some(base_open) = (*base).xOpen else {
                return ffi::SQLITE_CANTOPEN;
            };
            let rc = base_open(base, name, file, flags, out_flags);
            if rc == ffi::SQLITE_OK && !(*file).pMethods.is_null() {
                // The wrapped VFS gives every file the same methods.
                let methods = (*file).pMethods;
                IO_READY.call_once(|| {
                    let mut io = *methods;
                    io.xFileControl = Some(file_control);
                    (*IO.0.get()).write(io);
                });
                (*file).pMethods = (*IO.0.get()).as_ptr();
            }
            rc
        }
    }

    /// Fills SQLite's seed with `n` unpredictable bytes: each `RandomState` has fresh SipHash keys
    /// (seeded once per thread from `random_get`, then stepped), and hashing nothing with them
    /// gives 8 bytes no one can predict without the keys.
    unsafe extern "C" fn randomness(_: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
        use std::hash::{BuildHasher, Hasher};
        let n = usize::try_from(n).unwrap_or(0);
        // SAFETY: SQLite passes a buffer of `n` bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(out.cast::<u8>(), n) };
        for chunk in buf.chunks_mut(8) {
            let word = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
                .to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        c_int::try_from(n).unwrap_or(0)
    }

    unsafe extern "C" fn file_control(
        _: *mut ffi::sqlite3_file,
        _: c_int,
        _: *mut c_void,
    ) -> c_int {
        ffi::SQLITE_NOTFOUND
    }
}

/// Makes the shim SQLite's default VFS (once; before the first database file is opened).
pub(crate) fn install() {
    #[cfg(target_os = "wasi")]
    shim::install();
}

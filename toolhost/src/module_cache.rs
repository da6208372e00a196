//! The compiled-module cache: wasmtime's serialized code for each tool server, keyed by the module's
//! SHA-256 and the engine's compatibility hash, in a directory only the service can write.
//!
//! Loading serialized code is `unsafe` in wasmtime (it is trusted native code), so the cache is read
//! only from a directory owned by this user with no group/other permissions, and only files that
//! this service wrote there are ever loaded.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use caxton_ipc::error::Chain;
use wasmtime::{Engine, Module};

/// Why the cache cannot be used, or a module cannot be kept in it. Never fatal: the module is
/// compiled instead, and the reason logged.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot create the module cache {}", dir.display())]
    Create {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot inspect the module cache {}", dir.display())]
    Inspect {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the module cache {} must be owned by this user (uid {me}) with mode 0700; it is owned by uid {owner} with mode {mode:o}",
        dir.display()
    )]
    NotPrivate {
        dir: PathBuf,
        me: u32,
        owner: u32,
        mode: u32,
    },
    #[error("the cached module {} is unusable", path.display())]
    Unusable {
        path: PathBuf,
        #[source]
        source: wasmtime::Error,
    },
    #[error("cannot serialize the compiled module")]
    Serialize(#[source] wasmtime::Error),
    #[error("cannot write the cached module {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where compiled modules are kept, when the directory is safe to trust.
#[derive(Debug)]
pub struct ModuleCache {
    dir: PathBuf,
    engine_key: u64,
}

/// How a module was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cached,
    Compiled,
}

impl ModuleCache {
    /// Opens (creating with mode 0700) the cache directory. An error means the directory cannot
    /// be created or is not private to this user: the cache must then not be used.
    pub fn open(dir: &Path, engine: &Engine) -> Result<ModuleCache, CacheError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| CacheError::Create {
                dir: dir.to_owned(),
                source,
            })?;
        let meta = std::fs::metadata(dir).map_err(|source| CacheError::Inspect {
            dir: dir.to_owned(),
            source,
        })?;
        let me = nix::unistd::getuid().as_raw();
        if meta.uid() != me || meta.permissions().mode() & 0o077 != 0 {
            return Err(CacheError::NotPrivate {
                dir: dir.to_owned(),
                me,
                owner: meta.uid(),
                mode: meta.permissions().mode() & 0o777,
            });
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        Ok(ModuleCache {
            dir: dir.to_owned(),
            engine_key: h.finish(),
        })
    }

    fn path_for(&self, wasm: &[u8]) -> PathBuf {
        let digest = caxton_ipc::audit::sha256_hex(wasm);
        self.dir
            .join(format!("{digest}-{:016x}.cwasm", self.engine_key))
    }

    /// The module for `wasm`: from the cache if present and loadable, else compiled and stored.
    /// The error is the compiler's; the cache's own failures are logged and cost a compile.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> wasmtime::Result<(Module, Origin)> {
        let path = self.path_for(wasm);
        if path.exists() {
            // SAFETY: the file is in a directory owned by this user with mode 0700 (checked in
            // `open`), under a name derived from the module's hash and this engine's compatibility
            // hash, and only `store` below writes such files, with code this engine compiled.
            // wasmtime also checks the artifact's header and engine compatibility before use.
            match unsafe { Module::deserialize_file(engine, &path) } {
                Ok(m) => return Ok((m, Origin::Cached)),
                Err(source) => {
                    let e = CacheError::Unusable {
                        path: path.clone(),
                        source,
                    };
                    tracing::warn!(error = %Chain(&e), "discarding an unusable cached module");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let module = Module::new(engine, wasm)?;
        if let Err(e) = store(&path, &module) {
            tracing::warn!(error = %Chain(&e), "cannot cache the compiled module");
        }
        Ok((module, Origin::Compiled))
    }
}

/// Writes atomically: a private temporary file in the same directory, then a rename.
fn store(path: &Path, module: &Module) -> Result<(), CacheError> {
    let bytes = module.serialize().map_err(CacheError::Serialize)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let at = |path: &Path| {
        let path = path.to_owned();
        move |source| CacheError::Write { path, source }
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(at(&tmp))?;
    f.write_all(&bytes).map_err(at(&tmp))?;
    f.sync_all().map_err(at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(at(path))?;
    Ok(())
}

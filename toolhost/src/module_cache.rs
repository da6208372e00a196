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

use wasmtime::{Engine, Module};

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
    /// Opens (creating with mode 0700) the cache directory. Returns `None`, with a warning, when the
    /// directory cannot be created or is not private to this user: the cache is then not used.
    pub fn open(dir: &Path, engine: &Engine) -> Option<ModuleCache> {
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "not using the module cache: cannot create it");
            return None;
        }
        let meta = match std::fs::metadata(dir) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "not using the module cache");
                return None;
            }
        };
        let me = nix::unistd::getuid().as_raw();
        if meta.uid() != me || meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                owner = meta.uid(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "not using the module cache: it must be owned by this user with mode 0700"
            );
            return None;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        Some(ModuleCache {
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
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding an unusable cached module");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let module = Module::new(engine, wasm)?;
        if let Err(e) = store(&path, &module) {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled module");
        }
        Ok((module, Origin::Compiled))
    }
}

/// Writes atomically: a private temporary file in the same directory, then a rename.
fn store(path: &Path, module: &Module) -> anyhow::Result<()> {
    let bytes = module.serialize()?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

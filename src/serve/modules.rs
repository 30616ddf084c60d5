//! The module cache: guests uploaded under names, compiled once per
//! content hash (two names with the same bytes share one compilation), and
//! dropped when no name refers to them any more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::wasi::{self, p1};

use super::error::{ApiError, ApiResult, Code};

/// A compiled guest, ready to instantiate in any number of sandboxes.
#[derive(Clone, Debug)]
pub enum Compiled {
    /// A preview1 core module, on cowvfs's native preview1.
    Core(p1::Guest),
    /// A component (`wasi:cli/command`).
    Component(wasi::Guest),
}

/// One compiled module.
#[derive(Debug)]
pub struct Module {
    /// blake3 of the module's WebAssembly binary.
    pub hash: blake3::Hash,
    /// Bytes of the binary.
    pub size: usize,
    /// The guest.
    pub compiled: Compiled,
    /// Whether a run of it went past the inline slice once: its runs then
    /// go straight to a blocking thread (see `sandbox::run_inline`).
    pub slow: std::sync::atomic::AtomicBool,
}

impl Module {
    /// `"core"` (preview1) or `"component"`.
    pub fn kind(&self) -> &'static str {
        match self.compiled {
            Compiled::Core(_) => "core",
            Compiled::Component(_) => "component",
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    names: HashMap<String, blake3::Hash>,
    by_hash: HashMap<blake3::Hash, Arc<Module>>,
}

/// Named modules and their compilations.
#[derive(Debug)]
pub struct Modules {
    inner: Mutex<Inner>,
    max: usize,
}

/// WebAssembly binary from an upload: a binary as is, or WAT text
/// compiled to one.
pub fn to_binary(bytes: &[u8]) -> ApiResult<Vec<u8>> {
    if bytes.starts_with(b"\0asm") {
        return Ok(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| {
        ApiError::new(
            Code::BadModule,
            "not a WebAssembly module: neither the binary format (\\0asm) nor WAT text",
        )
    })?;
    wat::parse_str(text)
        .map_err(|e| ApiError::new(Code::BadModule, format!("cannot parse WAT: {e}")))
}

/// Compiles and links `binary` on `engine`; `name` becomes `argv[0]`.
/// Blocking: run it off the async threads.
pub fn compile(engine: &wasmtime::Engine, binary: &[u8], name: &str) -> ApiResult<Module> {
    let bad = |e: wasmtime::Error| ApiError::new(Code::BadModule, format!("{e:#}"));
    let compiled = if p1::is_core_module(binary) {
        let module = wasmtime::Module::new(engine, binary).map_err(bad)?;
        Compiled::Core(p1::Guest::new(engine, &module, name).map_err(bad)?)
    } else {
        let component = wasmtime::component::Component::new(engine, binary).map_err(bad)?;
        Compiled::Component(wasi::Guest::new(engine, &component, name).map_err(bad)?)
    };
    Ok(Module {
        hash: blake3::hash(binary),
        size: binary.len(),
        compiled,
        slow: Default::default(),
    })
}

impl Modules {
    /// An empty cache holding at most `max` distinct compilations.
    pub fn new(max: usize) -> Modules {
        Modules {
            inner: Mutex::new(Inner::default()),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The compilation of `hash`, if cached.
    pub fn compiled(&self, hash: &blake3::Hash) -> Option<Arc<Module>> {
        self.lock().by_hash.get(hash).cloned()
    }

    /// Names `module` `name` (replacing what the name meant), keeping the
    /// compilation already cached for the same hash. Refused with
    /// `limit_exceeded` when it would make more than the cache holds.
    pub fn insert(&self, name: &str, module: Arc<Module>) -> ApiResult<Arc<Module>> {
        let mut inner = self.lock();
        if !inner.names.contains_key(name) && inner.names.len() >= super::snapshots::MAX_NAMES {
            return Err(super::snapshots::too_many_names("module"));
        }
        let module = match inner.by_hash.get(&module.hash) {
            Some(m) => m.clone(),
            None => {
                let replacing_last = inner
                    .names
                    .get(name)
                    .is_some_and(|old| inner.names.values().filter(|h| *h == old).count() == 1);
                if inner.by_hash.len() >= self.max && !replacing_last {
                    return Err(ApiError::new(
                        Code::LimitExceeded,
                        format!(
                            "the server holds {} modules, its most; delete one first",
                            self.max
                        ),
                    ));
                }
                inner.by_hash.insert(module.hash, module.clone());
                module
            }
        };
        if let Some(old) = inner.names.insert(name.to_string(), module.hash) {
            forget_unnamed(&mut inner, old);
        }
        Ok(module)
    }

    /// The module named `name`, or whose hash is the 64-digit hex `name`.
    pub fn get(&self, name: &str) -> ApiResult<Arc<Module>> {
        let inner = self.lock();
        let hash = match inner.names.get(name) {
            Some(h) => Some(*h),
            None => blake3::Hash::from_hex(name).ok(),
        };
        hash.and_then(|h| inner.by_hash.get(&h).cloned())
            .ok_or_else(|| ApiError::new(Code::UnknownModule, format!("no module {name:?}")))
    }

    /// Forgets the name; the compilation goes when no name is left.
    pub fn remove(&self, name: &str) -> ApiResult<()> {
        let mut inner = self.lock();
        let old = inner
            .names
            .remove(name)
            .ok_or_else(|| ApiError::new(Code::UnknownModule, format!("no module {name:?}")))?;
        forget_unnamed(&mut inner, old);
        Ok(())
    }

    /// (name, module) pairs, sorted by name.
    pub fn list(&self) -> Vec<(String, Arc<Module>)> {
        let inner = self.lock();
        let mut out: Vec<_> = inner
            .names
            .iter()
            .filter_map(|(n, h)| Some((n.clone(), inner.by_hash.get(h)?.clone())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Distinct compilations held.
    pub fn count(&self) -> usize {
        self.lock().by_hash.len()
    }
}

fn forget_unnamed(inner: &mut Inner, hash: blake3::Hash) {
    if !inner.names.values().any(|h| *h == hash) {
        inner.by_hash.remove(&hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::snapshots::MAX_NAMES;

    #[test]
    fn module_names_stop_at_their_bound() {
        let engine = wasmtime::Engine::default();
        let wat = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;
        let m = Arc::new(compile(&engine, &to_binary(wat.as_bytes()).unwrap(), "m").unwrap());
        let mods = Modules::new(4);
        for i in 0..MAX_NAMES {
            mods.insert(&format!("n{i}"), m.clone()).unwrap();
        }
        let e = mods.insert("one-more", m.clone()).unwrap_err();
        assert_eq!(e.code, Code::LimitExceeded, "{}", e.message);
        assert!(mods.get("one-more").is_err());
        // A name already given may be given again.
        mods.insert("n5", m).unwrap();
        assert_eq!(mods.count(), 1);
    }
}

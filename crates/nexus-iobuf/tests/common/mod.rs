//! Test support: a store that records its write calls and can inject faults.

#![allow(dead_code)] // each test binary uses a different part
#![allow(clippy::unwrap_used)]

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use nexus_store::{MemoryStore, StoreError, StoreResult};
use nexus_testkit::{Call, Hooked};

type Hook = Box<dyn FnOnce(&MemoryStore) + Send>;

/// A [`MemoryStore`] (behind `nexus_testkit::Hooked`) that logs every write call
/// (`"blob_put k"`, `"kv_set k"`, `"commit"`, `"kv_delete k"`, `"blob_delete k"`),
/// fails the call whose event equals `fail_at`, and runs `interfere` hooks (once each)
/// just before the next commit, to stand in for a concurrent writer. Pass `&*target`
/// where a store is expected.
pub struct Recording {
    store: Hooked<MemoryStore>,
    log: Arc<Log>,
    pub inner: MemoryStore,
}

#[derive(Default)]
struct Log {
    events: Mutex<Vec<String>>,
    fail_at: Mutex<Option<String>>,
    before_commit: Mutex<Vec<Hook>>,
}

impl Log {
    fn on(&self, inner: &MemoryStore, call: Call<'_>) -> StoreResult<()> {
        if matches!(call, Call::Commit(_)) {
            let hook = {
                let mut hooks = self.before_commit.lock().unwrap();
                (!hooks.is_empty()).then(|| hooks.remove(0))
            };
            if let Some(hook) = hook {
                hook(inner);
            }
        }
        let Some(event) = call.write_event() else {
            return Ok(());
        };
        if self.fail_at.lock().unwrap().as_deref() == Some(event.as_str()) {
            return Err(StoreError::Backend(format!("injected failure at {event}")));
        }
        self.events.lock().unwrap().push(event);
        Ok(())
    }
}

impl Recording {
    pub fn new(inner: MemoryStore) -> Self {
        let log = Arc::new(Log::default());
        let hook_log = Arc::clone(&log);
        let store = Hooked::new(inner.clone())
            .with_before(move |inner: &MemoryStore, call| hook_log.on(inner, call));
        Self { store, log, inner }
    }

    pub fn fail_at(&self, event: &str) {
        *self.log.fail_at.lock().unwrap() = Some(event.to_owned());
    }

    /// Queues an interference run before one later commit (first queued, first run).
    pub fn interfere(&self, hook: impl FnOnce(&MemoryStore) + Send + 'static) {
        self.log.before_commit.lock().unwrap().push(Box::new(hook));
    }

    /// The recording store itself, as a value (it shares the log and the data).
    pub fn store(&self) -> Hooked<MemoryStore> {
        self.store.clone()
    }

    pub fn events(&self) -> Vec<String> {
        self.log.events.lock().unwrap().clone()
    }
}

impl Deref for Recording {
    type Target = Hooked<MemoryStore>;
    fn deref(&self) -> &Self::Target {
        &self.store
    }
}

pub fn b(x: &str) -> Vec<u8> {
    x.as_bytes().to_vec()
}

pub fn s(x: &str) -> String {
    x.to_owned()
}

//! The set of services: created in dependency order, commanded by name,
//! watched as a whole, and stopped in reverse dependency order.

use std::collections::HashMap;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::broadcast;

use crate::config::Config;
use crate::process;
use crate::service::{self, Handle, Request, Shared, Spec, State, Status};

/// Changes kept for watchers; one that falls further behind is sent every
/// service's status again (each status is whole, so nothing is lost but
/// the intermediate states). Small: every slot costs memory in init.
const EVENT_BUFFER: usize = 32;

#[derive(Clone)]
pub struct Supervisor {
    /// Every service, in start order.
    services: Vec<Handle>,
    /// Start levels (see `Config::start_order`), reversed to stop.
    levels: Vec<Vec<String>>,
    events: broadcast::Sender<Status>,
}

impl Supervisor {
    /// Starts a task for every service; enabled ones start their process
    /// as soon as their dependencies run.
    pub fn start(config: &Config, specs: Vec<Spec>, shared_base: &Shared) -> Self {
        let levels = config
            .start_order()
            .expect("checked when the config was loaded");
        let events = shared_base.events.clone();
        let mut specs: HashMap<String, Spec> =
            specs.into_iter().map(|s| (s.name.clone(), s)).collect();
        let mut handles: Vec<Handle> = Vec::new();
        for name in levels.iter().flatten() {
            let spec = specs.remove(name).expect("a spec per configured service");
            let deps = spec
                .depends_on
                .iter()
                .map(|d| {
                    handles
                        .iter()
                        .find(|h| &h.name == d)
                        .expect("dependencies start earlier")
                        .status
                        .clone()
                })
                .collect();
            handles.push(service::spawn(spec, shared_base.clone(), deps));
        }
        Supervisor {
            services: handles,
            levels,
            events,
        }
    }

    pub fn new_events() -> broadcast::Sender<Status> {
        broadcast::channel(EVENT_BUFFER).0
    }

    pub fn list(&self) -> Vec<Status> {
        self.services
            .iter()
            .map(|h| h.status.borrow().clone())
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&Handle> {
        self.services.iter().find(|h| h.name == name)
    }

    pub fn events(&self) -> broadcast::Receiver<Status> {
        self.events.subscribe()
    }

    /// Waits until no service is on its way up (each is running, failed,
    /// stopped or waiting on a dependency that will not come), or `limit`.
    pub async fn settled(&self, limit: Duration) -> Vec<Status> {
        let mut events = self.events();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let list = self.list();
            let busy = list.iter().any(|s| {
                matches!(s.state, State::Starting | State::Backoff | State::Stopping)
                    || (s.state == State::Waiting
                        && s.depends_on.iter().all(|d| {
                            list.iter()
                                .find(|x| &x.name == d)
                                .is_some_and(|x| !matches!(x.state, State::Failed | State::Stopped))
                        }))
            });
            if !busy {
                return list;
            }
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) => {}
                _ => return self.list(),
            }
        }
    }

    /// Stops every service, dependents before what they depend on; the
    /// services of one level stop together.
    pub async fn stop_all(&self) {
        for level in self.levels.iter().rev() {
            let stops = level
                .iter()
                .filter_map(|name| self.get(name))
                .map(|h| h.command(Request::Stop));
            futures::future::join_all(stops).await;
        }
    }

    /// Passes `signal` on to every running service's process group.
    pub fn forward(&self, signal: Signal) {
        for status in self.list() {
            if let Some(pid) = status.pid {
                process::signal_group(pid, signal);
            }
        }
    }
}

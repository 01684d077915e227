//! Work items, instances and invocations, with no I/O: who runs what, and
//! who waits for which result. One `Runner` behind a mutex is shared by
//! the IPC endpoint, the router link and the process supervisor; waits
//! happen on oneshot channels outside the lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::function::{Runtime, Spec};

/// Index of a function in the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionId(pub usize);

/// One process of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub u64);

/// What an instance is handed by `GET .../work`.
#[derive(Debug, Clone)]
pub struct WorkItem {
    pub id: String,
    pub payload: Bytes,
    /// Base64 JSON, passed through as `X-Amz-Client-Context`.
    pub client_context: String,
    /// A `RequestResponse` caller waits for the result.
    pub reply: bool,
}

/// How an invocation ended: the body, and `X-Amz-Function-Error` ("" on
/// success, `Handled` or `Unhandled`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub payload: Bytes,
    pub error: &'static str,
}

impl Outcome {
    pub fn unhandled(message: &str) -> Outcome {
        Outcome {
            payload: Bytes::from(serde_json::json!({ "errorMessage": message }).to_string()),
            error: "Unhandled",
        }
    }
}

/// Why a work item was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no function {0} in the deployed group")]
    NotFound(String),
    #[error("function {arn} cannot run: {why}")]
    Unavailable { arn: String, why: String },
    #[error("the work queue of {0} is full")]
    Full(String),
}

#[derive(Debug)]
struct Instance {
    token: String,
    /// Waiting in `GET .../work`.
    poller: Option<oneshot::Sender<WorkItem>>,
    /// The invocation it runs, if any.
    busy: Option<Busy>,
    idle_since: Instant,
    /// Its process, once started.
    pid: Option<u32>,
    /// Its function left the group or changed: it is killed (or not
    /// started), and takes no more work.
    stop: bool,
}

/// The invocation an instance runs.
#[derive(Debug)]
struct Busy {
    /// The invocation's id: its result must name it.
    invocation: String,
    /// When the instance took it; the function's Timeout counts from here.
    since: Instant,
}

/// Counters of one function.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub invocations: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub overflow: u64,
    /// Instances the kernel killed at their cgroup's memory limit.
    pub out_of_memory: u64,
}

/// Why an instance's process ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    /// The supervisor stopped it (its invocation timed out, it was idle,
    /// the core is stopping).
    #[error("stopped")]
    Stopped,
    /// The kernel killed it for going past its `MemorySize` (its cgroup
    /// counted an OOM kill).
    #[error("function {arn} exceeded its MemorySize of {memory_kb} KiB and was killed")]
    OutOfMemory { arn: String, memory_kb: u32 },
    /// It exited by itself, or could not start: how.
    #[error("{0}")]
    Exited(String),
}

#[derive(Debug)]
struct Function {
    spec: Spec,
    queue: VecDeque<WorkItem>,
    instances: BTreeMap<InstanceId, Instance>,
    counters: Counters,
    /// What the last failed invocation said (shortened).
    last_error: Option<String>,
    /// No longer the group's (`ApplyGroup` removed or replaced it): kept
    /// until its last instance has ended.
    retired: bool,
}

#[derive(Debug)]
enum Invocation {
    Waiting(Vec<oneshot::Sender<Outcome>>),
    Done(Outcome),
    /// A result only the function that asked may fetch (a secret's value):
    /// invocation ids are sequential, so anyone could name it.
    DoneFor(Outcome, String),
}

/// A function as `ListFunctions` shows it.
#[derive(Debug, Clone)]
pub struct View {
    pub spec: Spec,
    pub instances: usize,
    /// The processes of the running instances.
    pub pids: Vec<u32>,
    pub queued: usize,
    pub counters: Counters,
    pub last_error: Option<String>,
}

/// A result, or where it will come.
#[derive(Debug)]
pub enum Pending<T> {
    Ready(T),
    Later(oneshot::Receiver<T>),
}

/// An instance for the supervisor to start.
#[derive(Debug)]
pub struct Start {
    pub function: FunctionId,
    pub instance: InstanceId,
    /// The secret the instance presents to the IPC endpoint, which names
    /// it there.
    pub token: String,
}

#[derive(Debug)]
pub struct Runner {
    /// The group's functions, and retired ones whose instances still run.
    functions: HashMap<FunctionId, Function>,
    /// The group's functions in its order (what `ListFunctions` shows).
    order: Vec<FunctionId>,
    by_arn: HashMap<String, FunctionId>,
    /// Never reused: the supervisor may still report on a retired one.
    next_function: usize,
    /// Instances of retired functions for the supervisor to kill (taken by
    /// `overdue`).
    stopping: Vec<(FunctionId, InstanceId)>,
    tokens: HashMap<String, (FunctionId, InstanceId)>,
    /// Results of `RequestResponse` invocations until fetched.
    invocations: HashMap<String, Invocation>,
    next_instance: u64,
    next_invocation: u64,
    /// Instances to start go to the supervisor here.
    starts: mpsc::UnboundedSender<Start>,
    max_instances: usize,
    max_work_items: usize,
    idle: Duration,
    /// Part of every invocation id, so that ids differ across restarts.
    epoch: String,
}

/// At most 200 characters of an error, on one line.
fn shorten(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &one_line[..at]),
        None => one_line,
    }
}

/// A fresh secret: 128 bits from the kernel, hex.
pub fn secret() -> String {
    let mut buf = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut buf);
    }
    buf.iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Runner {
    pub fn new(
        specs: Vec<Spec>,
        starts: mpsc::UnboundedSender<Start>,
        max_instances: usize,
        max_work_items: usize,
        idle: Duration,
    ) -> Runner {
        let mut runner = Runner {
            functions: HashMap::new(),
            order: Vec::new(),
            by_arn: HashMap::new(),
            next_function: 0,
            stopping: Vec::new(),
            tokens: HashMap::new(),
            invocations: HashMap::new(),
            next_instance: 1,
            next_invocation: 1,
            starts,
            max_instances,
            max_work_items,
            idle,
            epoch: secret()[..8].to_string(),
        };
        for spec in specs {
            let f = runner.add(spec);
            runner.order.push(f);
        }
        runner
    }

    /// A new function, by its ARN (not yet in `order`).
    fn add(&mut self, spec: Spec) -> FunctionId {
        let f = FunctionId(self.next_function);
        self.next_function += 1;
        self.by_arn.insert(spec.arn.clone(), f);
        self.functions.insert(
            f,
            Function {
                spec,
                queue: VecDeque::new(),
                instances: BTreeMap::new(),
                counters: Counters::default(),
                last_error: None,
                retired: false,
            },
        );
        f
    }

    /// The spec of function `f`, while it has instances or is the group's.
    pub fn spec(&self, f: FunctionId) -> Option<&Spec> {
        self.functions.get(&f).map(|function| &function.spec)
    }

    /// The spec to start instance `i` of `f` with, unless it was stopped
    /// before it started.
    pub fn launch(&self, f: FunctionId, i: InstanceId) -> Option<Spec> {
        let function = self.functions.get(&f)?;
        let instance = function.instances.get(&i)?;
        (!instance.stop).then(|| function.spec.clone())
    }

    fn get(&mut self, f: FunctionId) -> &mut Function {
        self.functions.get_mut(&f).expect("a known function")
    }

    /// The function a token belongs to (the caller of an IPC request).
    pub fn caller(&self, token: &str) -> Option<(FunctionId, InstanceId)> {
        self.tokens.get(token).copied()
    }

    pub fn function(&self, arn: &str) -> Option<FunctionId> {
        self.by_arn.get(arn).copied()
    }

    /// Starts the instance of every pinned function that can run.
    pub fn start_pinned(&mut self) {
        for f in self.order.clone() {
            self.start_if_pinned(f);
        }
    }

    fn start_if_pinned(&mut self, f: FunctionId) {
        let function = &self.functions[&f];
        if function.spec.pinned
            && function.instances.is_empty()
            && !matches!(function.spec.runtime, Runtime::Unavailable(_))
        {
            self.reserve(f);
        }
    }

    /// A new invocation id.
    pub fn invocation_id(&mut self) -> String {
        self.next_invocation += 1;
        format!("{}-{:08}", self.epoch, self.next_invocation)
    }

    /// Queues work for the function `arn`: its invocation id.
    pub fn submit(
        &mut self,
        arn: &str,
        payload: Bytes,
        client_context: String,
        reply: bool,
    ) -> Result<String, Refused> {
        let f = self
            .function(arn)
            .ok_or_else(|| Refused::NotFound(arn.to_string()))?;
        let max_work_items = self.max_work_items;
        let function = self.get(f);
        if let Runtime::Unavailable(why) = &function.spec.runtime {
            return Err(Refused::Unavailable {
                arn: arn.to_string(),
                why: why.clone(),
            });
        }
        if function.queue.len() >= max_work_items {
            function.counters.overflow += 1;
            // Counted; the caller logs it (a routed message's refusal at
            // most every 10 s per function, `link.rs`) or is told.
            tracing::debug!(function = %arn, queued = function.queue.len(), "work queue full: work item refused");
            return Err(Refused::Full(arn.to_string()));
        }
        let id = self.invocation_id();
        if reply {
            self.invocations
                .insert(id.clone(), Invocation::Waiting(Vec::new()));
        }
        self.get(f).queue.push_back(WorkItem {
            id: id.clone(),
            payload,
            client_context,
            reply,
        });
        self.dispatch(f);
        Ok(id)
    }

    /// Hands queued work to instances waiting for it; asks for one more
    /// instance when work waits and none is free.
    fn dispatch(&mut self, f: FunctionId) {
        let now = Instant::now();
        let max_instances = self.max_instances;
        let function = self.get(f);
        while !function.queue.is_empty() {
            let Some(instance) = function
                .instances
                .values_mut()
                .find(|i| i.poller.is_some() && i.busy.is_none())
            else {
                break;
            };
            let item = function.queue.pop_front().expect("not empty");
            instance.busy = Some(Busy {
                invocation: item.id.clone(),
                since: now,
            });
            function.counters.invocations += 1;
            let poller = instance.poller.take().expect("found with a poller");
            if let Err(item) = poller.send(item) {
                // The instance hung up its poll: the item goes back.
                instance.busy = None;
                function.counters.invocations -= 1;
                function.queue.push_front(item);
            }
        }
        let starting = function
            .instances
            .values()
            .filter(|i| i.poller.is_none() && i.busy.is_none())
            .count();
        let limit = if function.spec.pinned {
            1
        } else {
            max_instances
        };
        if function.queue.len() > starting && function.instances.len() < limit {
            self.reserve(f);
        }
    }

    /// Makes an instance entry and asks the supervisor to start it.
    fn reserve(&mut self, f: FunctionId) {
        let id = InstanceId(self.next_instance);
        self.next_instance += 1;
        let token = secret();
        self.tokens.insert(token.clone(), (f, id));
        self.get(f).instances.insert(
            id,
            Instance {
                token: token.clone(),
                poller: None,
                busy: None,
                idle_since: Instant::now(),
                pid: None,
                stop: false,
            },
        );
        let _ = self.starts.send(Start {
            function: f,
            instance: id,
            token,
        });
    }

    /// An instance's process started as `pid`.
    pub fn started(&mut self, f: FunctionId, i: InstanceId, pid: u32) {
        if let Some(instance) = self
            .functions
            .get_mut(&f)
            .and_then(|function| function.instances.get_mut(&i))
        {
            instance.pid = Some(pid);
        }
    }

    /// An instance asks for work (`GET .../work`).
    pub fn take_work(&mut self, f: FunctionId, i: InstanceId) -> Option<Pending<WorkItem>> {
        let function = self.functions.get_mut(&f)?;
        let instance = function.instances.get_mut(&i).filter(|i| !i.stop)?;
        if let Some(item) = function.queue.pop_front() {
            instance.busy = Some(Busy {
                invocation: item.id.clone(),
                since: Instant::now(),
            });
            function.counters.invocations += 1;
            return Some(Pending::Ready(item));
        }
        let (tx, rx) = oneshot::channel();
        instance.poller = Some(tx);
        instance.busy = None;
        instance.idle_since = Instant::now();
        Some(Pending::Later(rx))
    }

    /// An instance gives the result of invocation `id` (`POST .../work`).
    pub fn finish(&mut self, f: FunctionId, i: InstanceId, id: &str, outcome: Outcome) -> bool {
        let Some(function) = self.functions.get_mut(&f) else {
            return false;
        };
        let Some(instance) = function.instances.get_mut(&i) else {
            return false;
        };
        match &instance.busy {
            Some(busy) if busy.invocation == id => {}
            _ => return false,
        }
        instance.busy = None;
        instance.idle_since = Instant::now();
        if !outcome.error.is_empty() {
            function.counters.errors += 1;
            function.last_error = Some(shorten(&String::from_utf8_lossy(&outcome.payload)));
        }
        if function.retired {
            // It ran its last invocation under the code it started with.
            instance.stop = true;
            self.stopping.push((f, i));
        }
        self.complete(id, outcome);
        true
    }

    fn complete(&mut self, id: &str, outcome: Outcome) {
        if let Some(Invocation::Waiting(waiters)) = self.invocations.remove(id) {
            if waiters.is_empty() {
                self.invocations
                    .insert(id.to_string(), Invocation::Done(outcome));
            } else {
                for w in waiters {
                    let _ = w.send(outcome.clone());
                }
            }
        }
    }

    /// The result of a `RequestResponse` invocation (`GET .../functions/<arn>`).
    pub fn result(&mut self, id: &str) -> Option<Pending<Outcome>> {
        self.result_for(id, None)
    }

    /// [`Runner::result`] asked by the function `caller`: a result kept
    /// for one function is given only to it (anyone else: none).
    pub fn result_for(&mut self, id: &str, caller: Option<&str>) -> Option<Pending<Outcome>> {
        match self.invocations.remove(id)? {
            Invocation::Done(o) => Some(Pending::Ready(o)),
            Invocation::DoneFor(o, owner) if Some(owner.as_str()) == caller => {
                Some(Pending::Ready(o))
            }
            kept @ Invocation::DoneFor(..) => {
                self.invocations.insert(id.to_string(), kept);
                None
            }
            Invocation::Waiting(mut waiters) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                self.invocations
                    .insert(id.to_string(), Invocation::Waiting(waiters));
                Some(Pending::Later(rx))
            }
        }
    }

    /// A result known at once (a shadow call, an unavailable service).
    pub fn done(&mut self, outcome: Outcome) -> String {
        let id = self.invocation_id();
        self.invocations
            .insert(id.clone(), Invocation::Done(outcome));
        id
    }

    /// A result known at once that only the function `owner` may fetch.
    pub fn done_for(&mut self, outcome: Outcome, owner: String) -> String {
        let id = self.invocation_id();
        self.invocations
            .insert(id.clone(), Invocation::DoneFor(outcome, owner));
        id
    }

    /// An instance's process ended (or could not start): what it ran fails
    /// as `Unhandled` with why (an OOM kill counted); a pinned function of
    /// the group gets a new instance (the supervisor delays its start), a
    /// retired function goes with its last one. True if one was asked for.
    pub fn exited(&mut self, f: FunctionId, i: InstanceId, ended: &Ended) -> bool {
        let Some(function) = self.functions.get_mut(&f) else {
            return false;
        };
        let Some(instance) = function.instances.remove(&i) else {
            return false;
        };
        self.tokens.remove(&instance.token);
        if matches!(ended, Ended::OutOfMemory { .. }) {
            function.counters.out_of_memory += 1;
        }
        let why = &ended.to_string();
        if let Some(busy) = instance.busy {
            function.counters.errors += 1;
            function.last_error = Some(shorten(why));
            self.complete(&busy.invocation, Outcome::unhandled(why));
        }
        let function = self.get(f);
        if function.retired {
            if function.instances.is_empty() {
                self.functions.remove(&f);
            }
            return false;
        }
        if function.spec.pinned {
            self.reserve(f);
            return true;
        }
        if function.instances.is_empty() && !function.queue.is_empty() {
            // Nothing left to run the queue: it fails rather than waits.
            let failed: Vec<WorkItem> = function.queue.drain(..).collect();
            function.counters.errors += failed.len() as u64;
            for item in failed {
                self.complete(&item.id, Outcome::unhandled(why));
            }
        }
        false
    }

    /// Instances past their function's Timeout (their invocation fails as
    /// `Unhandled`, counted), on-demand instances idle too long, and those
    /// of functions no longer in the group: the supervisor stops them.
    pub fn overdue(&mut self, now: Instant) -> Vec<(FunctionId, InstanceId)> {
        let mut out = std::mem::take(&mut self.stopping);
        let mut timed_out = Vec::new();
        for (&fi, function) in &mut self.functions {
            let timeout = function.spec.timeout;
            for (id, instance) in &mut function.instances {
                match &instance.busy {
                    Some(busy) if now.duration_since(busy.since) > timeout => {
                        function.counters.timeouts += 1;
                        function.counters.errors += 1;
                        function.last_error = Some(format!(
                            "Task timed out after {:.2} seconds",
                            timeout.as_secs_f64()
                        ));
                        timed_out.push((busy.invocation.clone(), timeout));
                        instance.busy = None;
                        out.push((fi, *id));
                    }
                    None if !function.spec.pinned
                        && !instance.stop
                        && instance.poller.is_some()
                        && now.duration_since(instance.idle_since) > self.idle =>
                    {
                        out.push((fi, *id));
                    }
                    _ => {}
                }
            }
        }
        for (inv, timeout) in timed_out {
            let message = format!("Task timed out after {:.2} seconds", timeout.as_secs_f64());
            self.complete(&inv, Outcome::unhandled(&message));
        }
        out
    }

    pub fn views(&self) -> Vec<View> {
        self.order
            .iter()
            .map(|f| &self.functions[f])
            .map(|f| View {
                spec: f.spec.clone(),
                instances: f.instances.len(),
                pids: f.instances.values().filter_map(|i| i.pid).collect(),
                queued: f.queue.len(),
                counters: f.counters,
                last_error: f.last_error.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "work_tests.rs"]
mod tests;

#[path = "work_apply.rs"]
mod apply;
pub use apply::{Applied, diff};

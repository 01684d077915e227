//! A new group's functions taken while the others run (`ApplyGroup`),
//! with no I/O: which functions start, restart, stop or stay, and what
//! becomes of their instances and work.

use std::collections::HashMap;

use super::{Function, FunctionId, Outcome, Runner, WorkItem};
use crate::function::{Runtime, Spec};

/// What a new group changed, by qualified ARN: in the new group's order
/// (`stopped`: in the old one's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// New in the group.
    pub started: Vec<String>,
    /// Their spec or artifact changed.
    pub restarted: Vec<String>,
    /// No longer in the group.
    pub stopped: Vec<String>,
    /// The same spec and artifact: left running.
    pub unchanged: Vec<String>,
}

/// How the functions `old` (running) become `new`: a function is the same
/// one when its ARN is, and changed when its spec differs in anything
/// (the artifact's directory and fingerprint included).
pub fn diff<'a>(old: impl IntoIterator<Item = &'a Spec>, new: &[Spec]) -> Applied {
    let old: Vec<&Spec> = old.into_iter().collect();
    let by_arn: HashMap<&str, &Spec> = old.iter().map(|s| (s.arn.as_str(), *s)).collect();
    let mut applied = Applied::default();
    for spec in new {
        let list = match by_arn.get(spec.arn.as_str()) {
            None => &mut applied.started,
            Some(running) if *running == spec => &mut applied.unchanged,
            Some(_) => &mut applied.restarted,
        };
        list.push(spec.arn.clone());
    }
    let kept: std::collections::HashSet<&str> = new.iter().map(|s| s.arn.as_str()).collect();
    applied.stopped = old
        .iter()
        .filter(|s| !kept.contains(s.arn.as_str()))
        .map(|s| s.arn.clone())
        .collect();
    applied
}

impl Runner {
    /// Follows the group's new functions `specs`: new ones added (pinned
    /// ones started); removed ones retired, their instances killed, their
    /// queued and running work failed; changed ones replaced: the new one
    /// takes the queued work, the old one's idle instances are killed and
    /// its busy ones finish their invocation under the old code, then are
    /// killed; unchanged ones untouched.
    pub fn apply(&mut self, specs: Vec<Spec>) -> Applied {
        let applied = diff(self.order.iter().map(|f| &self.functions[f].spec), &specs);
        let mut old = std::mem::take(&mut self.by_arn);
        let old_order = std::mem::take(&mut self.order);
        let mut fresh = Vec::new();
        for spec in specs {
            let f = match old.remove(&spec.arn) {
                Some(f) if self.functions[&f].spec == spec => {
                    self.by_arn.insert(spec.arn.clone(), f);
                    f
                }
                Some(was) => {
                    let (queue, counters, last_error) = self.retire(was, None);
                    let f = self.add(spec);
                    let function = self.get(f);
                    function.queue = queue;
                    function.counters = counters;
                    function.last_error = last_error;
                    fresh.push(f);
                    f
                }
                None => {
                    let f = self.add(spec);
                    fresh.push(f);
                    f
                }
            };
            self.order.push(f);
        }
        let removed: std::collections::HashSet<FunctionId> = old.into_values().collect();
        for f in old_order {
            if removed.contains(&f) {
                let arn = self.functions[&f].spec.arn.clone();
                let why = format!("function {arn} was removed from the deployed group");
                self.retire(f, Some(&why));
            }
        }
        for f in fresh {
            self.start_if_pinned(f);
            let function = self.get(f);
            if let Runtime::Unavailable(why) = &function.spec.runtime {
                let why = format!("function {} cannot run: {why}", function.spec.arn);
                let failed = std::mem::take(&mut function.queue);
                self.fail(f, failed, &why);
            } else {
                self.dispatch(f);
            }
        }
        applied
    }

    /// Takes `f` out of the group: its instances stop, at once when
    /// `removed` says why (what they run fails with it, as does the queued
    /// work), else once they are idle. Its queue and counters, for the
    /// function replacing it.
    fn retire(
        &mut self,
        f: FunctionId,
        removed: Option<&str>,
    ) -> (
        std::collections::VecDeque<WorkItem>,
        super::Counters,
        Option<String>,
    ) {
        let function = self.get(f);
        function.retired = true;
        let mut failed = Vec::new();
        let mut stopping = Vec::new();
        for (&i, instance) in &mut function.instances {
            if instance.busy.is_some() && removed.is_none() {
                // `finish` stops it after this invocation.
                continue;
            }
            if let Some(busy) = instance.busy.take() {
                failed.push(busy.invocation);
            }
            instance.stop = true;
            instance.poller = None;
            stopping.push((f, i));
        }
        let queue = std::mem::take(&mut function.queue);
        let kept = (function.counters, function.last_error.clone());
        let empty = function.instances.is_empty();
        self.stopping.extend(stopping);
        if empty {
            self.functions.remove(&f);
        }
        let Some(why) = removed else {
            return (queue, kept.0, kept.1);
        };
        for id in failed {
            self.complete(&id, Outcome::unhandled(why));
        }
        for item in queue {
            self.complete(&item.id, Outcome::unhandled(why));
        }
        (std::collections::VecDeque::new(), kept.0, kept.1)
    }

    /// Fails `items` of `f` with `why`, counted.
    fn fail(&mut self, f: FunctionId, items: impl IntoIterator<Item = WorkItem>, why: &str) {
        let mut n = 0;
        for item in items {
            n += 1;
            self.complete(&item.id, Outcome::unhandled(why));
        }
        if n > 0 {
            let function: &mut Function = self.get(f);
            function.counters.errors += n;
            function.last_error = Some(super::shorten(why));
        }
    }
}

#[cfg(test)]
#[path = "work_apply_tests.rs"]
mod tests;

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::super::tests::{runner, spec};
use super::*;
use crate::function::Fingerprint;
use crate::work::{Ended, Pending, Refused, Start};

fn arns(list: &[&str]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

fn ok() -> Outcome {
    Outcome {
        payload: Bytes::from("{}"),
        error: "",
    }
}

#[test]
fn the_diff_is_by_arn_and_any_difference_in_spec_or_artifact_is_a_change() {
    let old = vec![
        spec("same", true),
        spec("env", false),
        spec("code", false),
        spec("moved", false),
        spec("gone", false),
    ];
    let mut new = vec![spec("added", true), old[0].clone()];
    let mut env = spec("env", false);
    env.variables.insert("GREETING".into(), "bonjour".into());
    let mut code = spec("code", false);
    code.fingerprint = Fingerprint {
        files: 1,
        bytes: 10,
        newest: None,
    };
    let mut moved = spec("moved", false);
    moved.dir = "/content/other".into();
    new.extend([env, code, moved]);
    assert_eq!(
        diff(&old, &new),
        Applied {
            started: arns(&["added"]),
            restarted: arns(&["env", "code", "moved"]),
            stopped: arns(&["gone"]),
            unchanged: arns(&["same"]),
        }
    );
    assert_eq!(
        diff(&old, &old),
        Applied {
            unchanged: arns(&["same", "env", "code", "moved", "gone"]),
            ..Applied::default()
        }
    );
}

#[test]
fn removed_functions_stop_and_fail_their_work_while_unchanged_ones_keep_running() {
    let (mut r, mut starts) = runner(vec![spec("p", true), spec("gone", false)]);
    r.start_pinned();
    let Start {
        function: pf,
        instance: pi,
        ..
    } = starts.try_recv().unwrap();
    let Some(Pending::Later(mut pinned_poll)) = r.take_work(pf, pi) else {
        panic!("nothing queued")
    };
    let running = r.submit("gone", Bytes::new(), String::new(), true).unwrap();
    let Start {
        function: gf,
        instance: gi,
        ..
    } = starts.try_recv().unwrap();
    let Some(Pending::Ready(_)) = r.take_work(gf, gi) else {
        panic!()
    };
    let queued = r.submit("gone", Bytes::new(), String::new(), true).unwrap();
    let Start {
        instance: not_started,
        ..
    } = starts.try_recv().unwrap();

    let applied = r.apply(vec![spec("p", true), spec("new", true)]);
    assert_eq!(
        applied,
        Applied {
            started: arns(&["new"]),
            stopped: arns(&["gone"]),
            unchanged: arns(&["p"]),
            ..Applied::default()
        }
    );
    // The new pinned function starts; the unchanged one is not touched.
    let Start { function: nf, .. } = starts.try_recv().expect("the new pinned instance");
    assert!(starts.try_recv().is_err(), "nothing else starts");
    assert_ne!(nf, gf);
    r.submit("p", Bytes::new(), String::new(), false).unwrap();
    assert!(
        pinned_poll.try_recv().is_ok(),
        "the same pinned instance works on"
    );
    // The removed one's running and queued work fail saying why; its
    // instances are killed, the one not started yet is not started.
    for id in [running, queued] {
        let Some(Pending::Ready(o)) = r.result(&id) else {
            panic!("{id} not failed")
        };
        assert_eq!(o.error, "Unhandled");
        assert!(
            String::from_utf8_lossy(&o.payload)
                .contains("function gone was removed from the deployed group"),
            "{o:?}"
        );
    }
    let mut killed = r.overdue(Instant::now());
    killed.sort();
    assert_eq!(killed, [(gf, gi), (gf, not_started)]);
    assert!(r.launch(gf, not_started).is_none());
    assert_eq!(
        r.submit("gone", Bytes::new(), String::new(), false),
        Err(Refused::NotFound("gone".into()))
    );
    let listed: Vec<String> = r.views().into_iter().map(|v| v.spec.arn).collect();
    assert_eq!(listed, arns(&["p", "new"]));
    assert!(!r.exited(gf, gi, &Ended::Stopped));
    assert!(r.spec(gf).is_some(), "kept while an instance is left");
    assert!(!r.exited(gf, not_started, &Ended::Stopped));
    assert!(r.spec(gf).is_none(), "gone with its last instance");
    assert!(
        starts.try_recv().is_err(),
        "no replacement for a removed instance"
    );
}

#[test]
fn a_changed_function_is_replaced_its_busy_instances_finishing_under_the_old_code() {
    let (mut r, mut starts) = runner(vec![spec("a", false), spec("q", true)]);
    r.start_pinned();
    let Start {
        function: qf,
        instance: qi,
        ..
    } = starts.try_recv().unwrap();
    let Some(Pending::Later(_idle)) = r.take_work(qf, qi) else {
        panic!()
    };
    // Two busy instances of `a` (its limit) and one item queued.
    let mut busy = Vec::new();
    for _ in 0..2 {
        r.submit("a", Bytes::new(), String::new(), true).unwrap();
        let Start {
            function: af,
            instance: ai,
            ..
        } = starts.try_recv().unwrap();
        let Some(Pending::Ready(item)) = r.take_work(af, ai) else {
            panic!()
        };
        busy.push((af, ai, item.id));
    }
    let queued = r.submit("a", Bytes::new(), String::new(), true).unwrap();
    assert!(starts.try_recv().is_err(), "at its instance limit");
    let af = busy[0].0;

    let mut changed_a = spec("a", false);
    changed_a
        .variables
        .insert("GREETING".into(), "bonjour".into());
    let mut changed_q = spec("q", true);
    changed_q.timeout = Duration::from_secs(9);
    let applied = r.apply(vec![changed_a, changed_q]);
    assert_eq!(applied.restarted, arns(&["a", "q"]));
    // The new `a` takes the queued item; the new `q` starts.
    let mut new = Vec::new();
    while let Ok(s) = starts.try_recv() {
        new.push(s);
    }
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(new.iter().all(|s| s.function != af && s.function != qf));
    let new_a = new
        .iter()
        .find(|s| r.spec(s.function).unwrap().arn == "a")
        .unwrap();
    let Some(Pending::Ready(item)) = r.take_work(new_a.function, new_a.instance) else {
        panic!("the queued work moved to the new function")
    };
    assert_eq!(item.id, queued);
    assert_eq!(
        r.launch(new_a.function, new_a.instance)
            .unwrap()
            .variables
            .get("GREETING")
            .map(String::as_str),
        Some("bonjour")
    );
    // The old pinned instance was idle: killed now; the busy ones are not.
    assert_eq!(r.overdue(Instant::now()), [(qf, qi)]);
    let (f, i, id) = &busy[0];
    let Some(Pending::Later(mut caller)) = r.result(id) else {
        panic!()
    };
    assert!(r.finish(*f, *i, id, ok()), "it finishes its invocation");
    assert_eq!(caller.try_recv().unwrap(), ok());
    assert_eq!(r.overdue(Instant::now()), [(*f, *i)], "then it is stopped");
    assert!(r.take_work(*f, *i).is_none(), "and takes no more work");
    for (f, i) in [(*f, *i), (busy[1].0, busy[1].1), (qf, qi)] {
        assert!(!r.exited(f, i, &Ended::Stopped), "not replaced");
    }
    assert!(r.spec(af).is_none() && r.spec(qf).is_none());
    assert!(starts.try_recv().is_err());
    let views = r.views();
    assert_eq!(views.len(), 2);
    assert_eq!(views[0].counters.invocations, 3, "counters carried over");
}

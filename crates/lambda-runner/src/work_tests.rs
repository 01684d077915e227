use super::*;

pub(super) fn spec(arn: &str, pinned: bool) -> Spec {
    Spec {
        arn: arn.into(),
        name: "f".into(),
        version: "1".into(),
        dir: "/nonexistent".into(),
        fingerprint: crate::function::Fingerprint::default(),
        runtime: Runtime::Python {
            handler: "f.handler".into(),
        },
        pinned,
        timeout: Duration::from_secs(3),
        memory_kb: 16_384,
        binary: false,
        variables: BTreeMap::new(),
        uid: 65534,
        gid: 65534,
        container: false,
        grants: crate::resources::Grants::default(),
        access_sysfs: false,
    }
}

pub(super) fn runner(specs: Vec<Spec>) -> (Runner, mpsc::UnboundedReceiver<Start>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Runner::new(specs, tx, 2, 2, Duration::from_mins(1)), rx)
}

#[test]
fn work_starts_an_instance_which_takes_it_and_the_caller_gets_the_result() {
    let (mut r, mut starts) = runner(vec![spec("a", false)]);
    let id = r
        .submit("a", Bytes::from("1"), String::new(), true)
        .unwrap();
    let Start {
        function: f,
        instance: i,
        token,
    } = starts.try_recv().expect("an instance is started");
    assert_eq!(r.caller(&token), Some((f, i)));
    let Some(Pending::Ready(item)) = r.take_work(f, i) else {
        panic!("queued work is handed at once")
    };
    assert_eq!(item.id, id);
    let Some(Pending::Later(mut waiting)) = r.result(&id) else {
        panic!("not done yet")
    };
    let ok = Outcome {
        payload: Bytes::from("2"),
        error: "",
    };
    assert!(r.finish(f, i, &id, ok.clone()));
    assert_eq!(waiting.try_recv().unwrap(), ok);
    // The instance polls again; new work goes straight to it.
    let Some(Pending::Later(mut next)) = r.take_work(f, i) else {
        panic!("nothing queued")
    };
    r.submit("a", Bytes::from("3"), String::new(), false)
        .unwrap();
    assert_eq!(next.try_recv().unwrap().payload, Bytes::from("3"));
    assert!(starts.try_recv().is_err(), "no second instance needed");
}

#[test]
fn a_full_queue_refuses_and_unknown_or_unavailable_functions_are_told_apart() {
    let mut broken = spec("b", false);
    broken.runtime = Runtime::Unavailable("why".into());
    let (mut r, _starts) = runner(vec![spec("a", false), broken]);
    // Two instances may start (max 2) but none takes work yet.
    for _ in 0..2 {
        r.submit("a", Bytes::new(), String::new(), false).unwrap();
    }
    assert_eq!(
        r.submit("a", Bytes::new(), String::new(), false),
        Err(Refused::Full("a".into()))
    );
    assert_eq!(r.views()[0].counters.overflow, 1);
    assert!(matches!(
        r.submit("b", Bytes::new(), String::new(), false),
        Err(Refused::Unavailable { .. })
    ));
    assert_eq!(
        r.submit("c", Bytes::new(), String::new(), false),
        Err(Refused::NotFound("c".into()))
    );
}

#[test]
fn a_timeout_fails_the_invocation_and_a_pinned_function_gets_a_new_instance() {
    let (mut r, mut starts) = runner(vec![spec("p", true)]);
    r.start_pinned();
    let Start {
        function: f,
        instance: i,
        ..
    } = starts.try_recv().unwrap();
    let id = r.submit("p", Bytes::new(), String::new(), true).unwrap();
    assert!(
        starts.try_recv().is_err(),
        "a pinned function has one instance"
    );
    let Some(Pending::Ready(_)) = r.take_work(f, i) else {
        panic!()
    };
    assert!(r.overdue(Instant::now()).is_empty());
    let late = Instant::now() + Duration::from_secs(4);
    assert_eq!(r.overdue(late), [(f, i)]);
    let Some(Pending::Ready(outcome)) = r.result(&id) else {
        panic!("timed out")
    };
    assert_eq!(outcome.error, "Unhandled");
    assert!(
        String::from_utf8_lossy(&outcome.payload).contains("Task timed out after 3.00 seconds")
    );
    assert!(r.exited(f, i, &Ended::Exited("killed".into())));
    let Start {
        instance: again, ..
    } = starts.try_recv().expect("a new instance");
    assert_ne!(again, i);
    let c = r.views()[0].counters;
    assert_eq!((c.timeouts, c.errors, c.invocations), (1, 1, 1));
}

#[test]
fn an_instance_that_dies_fails_its_invocation_and_an_orphaned_queue() {
    let (mut r, mut starts) = runner(vec![spec("a", false)]);
    let first = r.submit("a", Bytes::new(), String::new(), true).unwrap();
    let Start {
        function: f,
        instance: i,
        ..
    } = starts.try_recv().unwrap();
    let Some(Pending::Ready(_)) = r.take_work(f, i) else {
        panic!()
    };
    let queued = r.submit("a", Bytes::new(), String::new(), true).unwrap();
    let Start {
        instance: second, ..
    } = starts.try_recv().unwrap();
    assert!(!r.exited(f, second, &Ended::Exited("could not start".into())));
    assert!(!r.exited(f, i, &Ended::Exited("exited with status 1".into())));
    for id in [first, queued] {
        let Some(Pending::Ready(o)) = r.result(&id) else {
            panic!()
        };
        assert_eq!(o.error, "Unhandled");
    }
}

#[test]
fn on_demand_instances_idle_too_long_are_stopped_but_pinned_ones_stay() {
    let (mut r, mut starts) = runner(vec![spec("a", false), spec("p", true)]);
    r.start_pinned();
    let Start {
        function: pf,
        instance: pi,
        ..
    } = starts.try_recv().unwrap();
    r.submit("a", Bytes::new(), String::new(), false).unwrap();
    let Start {
        function: f,
        instance: i,
        ..
    } = starts.try_recv().unwrap();
    let Some(Pending::Ready(item)) = r.take_work(f, i) else {
        panic!()
    };
    assert!(r.finish(
        f,
        i,
        &item.id,
        Outcome {
            payload: Bytes::new(),
            error: ""
        }
    ));
    // Both wait for work now.
    let Some(Pending::Later(_waiting)) = r.take_work(f, i) else {
        panic!()
    };
    let Some(Pending::Later(_pinned)) = r.take_work(pf, pi) else {
        panic!()
    };
    assert!(r.overdue(Instant::now()).is_empty(), "not idle long yet");
    let later = Instant::now() + Duration::from_secs(61);
    assert_eq!(r.overdue(later), [(f, i)], "only the on-demand one");
    assert!(
        !r.exited(f, i, &Ended::Stopped),
        "no replacement while idle"
    );
    assert_eq!(r.views()[0].instances, 0);
    assert_eq!(r.views()[1].instances, 1);
}

#[test]
fn an_instance_killed_at_its_memory_limit_fails_its_invocation_saying_so_and_is_counted() {
    let (mut runner, mut starts) = runner(vec![spec("a", false)]);
    let id = runner
        .submit("a", Bytes::new(), String::new(), true)
        .unwrap();
    let Start {
        function, instance, ..
    } = starts.try_recv().unwrap();
    let Some(Pending::Ready(_)) = runner.take_work(function, instance) else {
        panic!()
    };
    let oom = Ended::OutOfMemory {
        arn: "a".into(),
        memory_kb: 16_384,
    };
    assert!(!runner.exited(function, instance, &oom));
    let Some(Pending::Ready(outcome)) = runner.result(&id) else {
        panic!()
    };
    assert_eq!(outcome.error, "Unhandled");
    assert_eq!(
        String::from_utf8_lossy(&outcome.payload),
        r#"{"errorMessage":"function a exceeded its MemorySize of 16384 KiB and was killed"}"#
    );
    let counters = runner.views()[0].counters;
    assert_eq!((counters.out_of_memory, counters.errors), (1, 1));
}

#[test]
fn a_result_kept_for_one_function_is_given_to_no_other() {
    let (mut r, _starts) = runner(Vec::new());
    let outcome = Outcome {
        payload: Bytes::from_static(b"{\"SecretString\":\"s\"}"),
        error: "",
    };
    let id = r.done_for(outcome, "arn:aws:lambda:r:1:function:reader:1".into());
    assert!(
        r.result_for(&id, Some("arn:aws:lambda:r:1:function:other:1"))
            .is_none()
    );
    assert!(r.result(&id).is_none(), "nor to an operator's call");
    let Some(Pending::Ready(o)) = r.result_for(&id, Some("arn:aws:lambda:r:1:function:reader:1"))
    else {
        panic!("the reader gets it");
    };
    assert_eq!(o.payload, Bytes::from_static(b"{\"SecretString\":\"s\"}"));
}

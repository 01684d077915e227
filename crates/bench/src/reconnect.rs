//! Persistent sessions reconnecting at once while the broker is busy (a
//! site's devices coming back after a network cut, while others keep
//! publishing): each client's time from opening its connection to its
//! CONNACK.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use tokio::task::JoinSet;

use crate::mqtt::{Target, connected, options};

/// QoS 1 publishers kept busy while the clients reconnect.
const LOAD_PUBLISHERS: usize = 4;

fn persistent(t: &Target, id: &str) -> (AsyncClient, EventLoop) {
    let mut o = options(t, id);
    o.set_clean_session(false);
    AsyncClient::new(o, 100)
}

/// Polls until `pred` accepts an incoming packet.
async fn until(events: &mut EventLoop, pred: impl Fn(&Packet) -> bool) -> Result<(), String> {
    loop {
        match events.poll().await {
            Ok(Event::Incoming(p)) if pred(&p) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// `n` persistent sessions, each subscribed at QoS 1, left.
async fn sessions(t: &Target, n: usize, tag: &str) -> Result<(), String> {
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let (t, id) = (t.clone(), format!("{tag}-c{i}"));
        tasks.spawn(async move {
            let (client, mut events) = persistent(&t, &id);
            connected(&mut events).await?;
            client
                .subscribe(format!("{id}/#"), QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string())?;
            until(&mut events, |p| matches!(p, Packet::SubAck(_))).await?;
            let _ = client.disconnect().await;
            let _ = until(&mut events, |_| false).await;
            Ok::<(), String>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// QoS 1 publishers sending flat out to a persistent subscriber, until
/// the returned set is dropped.
async fn load(t: &Target, tag: &str) -> Result<JoinSet<()>, String> {
    let mut tasks = JoinSet::new();
    let (sub, mut sub_events) = persistent(t, &format!("{tag}-load-s"));
    connected(&mut sub_events).await?;
    sub.subscribe(format!("{tag}/load/#"), QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    tasks.spawn(async move {
        let _sub = sub;
        while sub_events.poll().await.is_ok() {}
    });
    for p in 0..LOAD_PUBLISHERS {
        let (client, mut events) = AsyncClient::new(options(t, &format!("{tag}-load-p{p}")), 100);
        connected(&mut events).await?;
        tasks.spawn(async move { while events.poll().await.is_ok() {} });
        let topic = format!("{tag}/load/{p}");
        tasks.spawn(async move {
            while client
                .publish(topic.as_str(), QoS::AtLeastOnce, false, vec![0xab; 64])
                .await
                .is_ok()
            {}
        });
    }
    Ok(tasks)
}

/// Makes `n` persistent sessions, starts a QoS 1 load, then has every
/// session's client reconnect at once; the CONNACK times in microseconds,
/// sorted, and how many did not connect within a minute.
pub async fn storm(t: &Target, n: usize, tag: &str) -> Result<(Vec<u64>, usize), String> {
    sessions(t, n, tag).await?;
    let load = load(t, tag).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut tasks = JoinSet::new();
    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    for i in 0..n {
        let (t, id, mut stop) = (t.clone(), format!("{tag}-c{i}"), stop.subscribe());
        tasks.spawn(async move {
            let begun = Instant::now();
            let (client, mut events) = persistent(&t, &id);
            let took = tokio::time::timeout(Duration::from_mins(1), connected(&mut events)).await;
            let took = matches!(took, Ok(Ok(()))).then(|| begun.elapsed().as_micros() as u64);
            // Stays connected (taking what was queued) until all are back.
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.recv() => {}
                    () = async { while events.poll().await.is_ok() {} } => {}
                }
                let _ = client.disconnect().await;
            });
            took
        });
    }
    let mut times = Vec::with_capacity(n);
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Some(us)) => times.push(us),
            _ => failed += 1,
        }
    }
    let _ = stop.send(());
    drop(load);
    tokio::time::sleep(Duration::from_millis(500)).await;
    times.sort_unstable();
    Ok((times, failed))
}

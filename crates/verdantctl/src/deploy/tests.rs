//! The arguments, and following a deployment against a scripted
//! `Deployments` server on a Unix socket (the ota-agent's API, with the
//! answers each test needs).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use clap::{CommandFactory, Parser};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response};
use verdant_common::uds;
use verdant_proto::ota::v1::Phase;
use verdant_proto::ota::v1::deployments_server::{Deployments, DeploymentsServer};

use super::*;
use crate::progress::{Mode, Progress};
use crate::{Args, Cmd};

fn parse(args: &[&str]) -> Result<Args, clap::Error> {
    Args::try_parse_from(std::iter::once("verdantctl").chain(args.iter().copied()))
}

fn deploy_args(args: &[&str]) -> DeployArgs {
    match parse(args).expect("parses").command {
        Cmd::Deploy(a) => a,
        other => panic!("not deploy: {other:?}"),
    }
}

#[test]
fn deploy_takes_a_source_a_type_and_no_wait() {
    let a = deploy_args(&["deploy", "group.json"]);
    assert_eq!(a.source.as_deref(), Some(Path::new("group.json")));
    assert_eq!(a.deployment_type, DeploymentType::New);
    assert!(!a.no_wait);
    let a = deploy_args(&["deploy", "--type", "ResetDeployment", "--no-wait"]);
    assert_eq!(a.source, None);
    assert_eq!(a.deployment_type, DeploymentType::Reset);
    assert!(a.no_wait);
    let a = deploy_args(&["deploy", "b.tgz", "--type", "redeployment"]);
    assert_eq!(a.deployment_type, DeploymentType::Redeployment);
    let a = deploy_args(&["-o", "json", "deploy", "--type=ForceResetDeployment"]);
    assert_eq!(a.deployment_type, DeploymentType::ForceReset);
    let e = parse(&["deploy", "g.json", "--type", "Partial"]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
}

#[test]
fn deployments_defaults_to_list_and_takes_ids() {
    let args = parse(&["deployments"]).unwrap();
    assert!(matches!(args.command, Cmd::Deployments { command: None }));
    let args = parse(&["deployments", "list", "--limit", "3", "-o", "json"]).unwrap();
    assert!(matches!(
        args.command,
        Cmd::Deployments {
            command: Some(DeploymentsCmd::List { limit: 3 })
        }
    ));
    assert_eq!(args.output, crate::Format::Json);
    for (word, id) in [("show", "a"), ("watch", "b"), ("cancel", "c")] {
        let args = parse(&["deployments", word, id]).unwrap();
        let Cmd::Deployments { command: Some(cmd) } = args.command else {
            panic!("not deployments");
        };
        let got = match cmd {
            DeploymentsCmd::Show { id } | DeploymentsCmd::Watch { id } => id,
            DeploymentsCmd::Cancel { id } => format!("cancel {id}"),
            DeploymentsCmd::List { .. } => panic!("list"),
        };
        assert!(got.ends_with(id));
    }
    assert!(parse(&["deployments", "show"]).is_err(), "an id is needed");
}

#[test]
fn help_and_completions_know_the_deploy_commands() {
    Args::command().debug_assert();
    let mut cmd = Args::command();
    let help = cmd
        .find_subcommand_mut("deploy")
        .unwrap()
        .render_long_help()
        .to_string();
    for word in [
        "--type",
        "--no-wait",
        "NewDeployment",
        "Redeployment",
        "ResetDeployment",
        "ForceResetDeployment",
        ".tgz",
    ] {
        assert!(help.contains(word), "{word} not in {help}");
    }
    let mut script = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::Bash,
        &mut Args::command(),
        "verdantctl",
        &mut script,
    );
    let script = String::from_utf8(script).unwrap();
    assert!(script.contains("deployments"), "no deployments");
    assert!(script.contains("ForceResetDeployment"), "no types");
}

#[test]
fn sources_are_told_apart_by_kind_and_name() {
    use DeploymentType::{ForceReset, New, Redeployment, Reset};
    let p = Path::new;
    let ok = |path: &'static str, dir, kind| classify(Some(p(path)), dir, kind).unwrap();
    assert_eq!(
        ok("g/group.json", false, New),
        Source::GroupJson(p("g/group.json"))
    );
    assert_eq!(
        ok("G.JSON", false, Redeployment),
        Source::GroupJson(p("G.JSON"))
    );
    assert_eq!(ok("bundle", true, New), Source::Bundle(p("bundle")));
    assert_eq!(ok("odd.json", true, New), Source::Bundle(p("odd.json")));
    for tarball in ["b.tar", "b.tar.gz", "b.tgz"] {
        assert_eq!(ok(tarball, false, New), Source::Bundle(p(tarball)));
    }
    assert_eq!(classify(None, false, Reset), Ok(Source::Nothing));
    assert_eq!(classify(None, false, ForceReset), Ok(Source::Nothing));
    assert_eq!(classify(None, false, Redeployment), Ok(Source::Nothing));
    let e = classify(Some(p("b.zip")), false, New).unwrap_err();
    assert!(e.starts_with("b.zip: not a group.json"), "{e}");
    let e = classify(None, false, New).unwrap_err();
    assert!(e.starts_with("give a group.json"), "{e}");
    let e = classify(Some(p("g.json")), false, Reset).unwrap_err();
    assert_eq!(
        e,
        "a ResetDeployment deploys an empty group: give it no file"
    );
}

#[test]
fn the_request_carries_the_json_or_the_bundles_absolute_path() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("group.json");
    std::fs::write(&json, br#"{"Id":"g"}"#).unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    let args = |source: Option<PathBuf>, deployment_type| DeployArgs {
        source,
        deployment_type,
        no_wait: false,
    };

    let req = request(&args(Some(json.clone()), DeploymentType::New)).unwrap();
    assert_eq!(
        req.source,
        Some(pb::deploy_request::Source::GroupJson(
            br#"{"Id":"g"}"#.to_vec()
        ))
    );
    assert_eq!(req.deployment_type, "NewDeployment");
    assert_eq!(req.origin, "verdantctl");

    // A relative path is sent as the absolute one the agent can open.
    let relative = bundle.join("..").join("bundle");
    let req = request(&args(Some(relative), DeploymentType::Redeployment)).unwrap();
    let Some(pb::deploy_request::Source::Bundle(sent)) = req.source else {
        panic!("not a bundle: {req:?}");
    };
    assert_eq!(
        Path::new(&sent),
        std::fs::canonicalize(&bundle).unwrap().as_path()
    );

    let req = request(&args(None, DeploymentType::Reset)).unwrap();
    assert_eq!(req.source, None);
    assert_eq!(req.deployment_type, "ResetDeployment");

    let missing = dir.path().join("nope.tgz");
    let e = request(&args(Some(missing), DeploymentType::New)).unwrap_err();
    assert!(e.contains("nope.tgz"), "{e}");
}

/// Answers scripted for one test; each watch takes the next stream.
#[derive(Default)]
struct Script {
    deployed: Vec<pb::DeployRequest>,
    watches: VecDeque<Vec<Result<pb::Deployment, Status>>>,
    /// Whether a watch's stream stays open after its items, as a running
    /// deployment's does (else it ends, as a stopping agent's does).
    hang: bool,
    gets: VecDeque<Answer>,
    /// What `ListDeployments` answers (UNIMPLEMENTED when none).
    list: Option<pb::ListDeploymentsResponse>,
    watch_calls: usize,
    get_calls: usize,
}

#[derive(Clone, Default)]
struct Agent(Arc<Mutex<Script>>);

type Answer = Result<pb::Deployment, Status>;

impl Agent {
    /// An agent answering its watches and its gets with these, in order.
    fn scripted(watches: Vec<Vec<Answer>>, gets: Vec<Answer>) -> Self {
        Self(Arc::new(Mutex::new(Script {
            watches: watches.into(),
            gets: gets.into(),
            ..Script::default()
        })))
    }

    /// How many gets and watches it answered.
    fn calls(&self) -> (usize, usize) {
        let s = self.0.lock().unwrap();
        (s.get_calls, s.watch_calls)
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

const ID: &str = "3f1c2a9e-8d4b-4e0f-a1b2-c3d4e5f60718";

fn at(phase: Phase) -> pb::Deployment {
    pb::Deployment {
        deployment_id: ID.into(),
        deployment_type: "NewDeployment".into(),
        origin: "verdantctl".into(),
        phase: phase as i32,
        ..pb::Deployment::default()
    }
}

#[tonic::async_trait]
impl Deployments for Agent {
    type WatchDeploymentStream = BoxStream<pb::Deployment>;

    async fn deploy(
        &self,
        req: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        self.0.lock().unwrap().deployed.push(req.into_inner());
        Ok(Response::new(at(Phase::Queued)))
    }

    async fn list_deployments(
        &self,
        _: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        let list = self.0.lock().unwrap().list.clone();
        list.map(Response::new)
            .ok_or_else(|| Status::unimplemented("not scripted"))
    }

    async fn get_deployment(
        &self,
        _: Request<pb::DeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let mut s = self.0.lock().unwrap();
        s.get_calls += 1;
        s.gets
            .pop_front()
            .expect("a scripted get")
            .map(Response::new)
    }

    async fn watch_deployment(
        &self,
        req: Request<pb::DeploymentRequest>,
    ) -> Result<Response<Self::WatchDeploymentStream>, Status> {
        let mut s = self.0.lock().unwrap();
        s.watch_calls += 1;
        let Some(items) = s.watches.pop_front() else {
            return Err(Status::not_found(format!(
                "no deployment {}",
                req.into_inner().deployment_id
            )));
        };
        let items = tokio_stream::iter(items);
        if s.hang {
            return Ok(Response::new(Box::pin(
                items.chain(tokio_stream::pending()),
            )));
        }
        Ok(Response::new(Box::pin(items)))
    }

    async fn cancel_deployment(
        &self,
        _: Request<pb::DeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        Err(Status::failed_precondition(format!(
            "deployment {ID} has ended"
        )))
    }
}

fn socket(dir: &Path) -> PathBuf {
    dir.join("ota-agent.sock")
}

fn server(
    agent: &Agent,
    socket: &Path,
) -> impl Future<Output = Result<(), tonic::transport::Error>> + use<> {
    let listener = uds::bind(socket).unwrap();
    tonic::transport::Server::builder()
        .add_service(DeploymentsServer::new(agent.clone()))
        .serve_with_incoming(UnixListenerStream::new(listener))
}

/// Serves `agent` on `<dir>/ota-agent.sock`, as the ota-agent does.
fn serve(agent: &Agent) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tokio::spawn(server(agent, &socket(dir.path())));
    dir
}

/// An agent on a runtime of its own: dropping it drops every connection
/// at once, as the agent's process dying does.
struct Process {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    fn start(agent: &Agent, socket: &Path) -> Self {
        let (agent, socket) = (agent.clone(), socket.to_path_buf());
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (ready, is_ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                tokio::spawn(server(&agent, &socket));
                ready.send(()).unwrap();
                let _ = tokio::task::spawn_blocking(move || stopped.recv()).await;
            });
        });
        is_ready.recv().unwrap();
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        drop(self.stop.take());
        self.thread.take().unwrap().join().unwrap();
    }
}

/// What `follow` prints; once it has printed `STAGING`, the first agent
/// dies and a second one starts on the same socket.
struct Restarting {
    out: Vec<u8>,
    first: Option<Process>,
    second: Option<(Agent, PathBuf)>,
    running: Option<Process>,
}

impl Write for Restarting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.extend_from_slice(buf);
        if self.out.ends_with(b"STAGING\n") {
            drop(self.first.take());
            let (agent, socket) = self.second.take().unwrap();
            self.running = Some(Process::start(&agent, &socket));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Follows deployment `ID` with no wait between attempts; the plain lines
/// printed, and how it ended.
async fn follow_lines(dir: &Path) -> (Vec<String>, Result<pb::Deployment, String>) {
    let mut progress = Progress::new(Mode::Lines, Vec::new());
    let waits = [Duration::ZERO; 3];
    let ended = follow(dir, ID, &mut progress, &waits).await;
    let text = String::from_utf8(progress.out).unwrap();
    (text.lines().map(String::from).collect(), ended)
}

#[tokio::test]
async fn following_prints_each_change_once_until_the_end() {
    let mut downloading = at(Phase::Downloading);
    downloading.bytes_total = 4096;
    let mut half = downloading.clone();
    half.bytes_done = 2048;
    let mut applying = at(Phase::Applying);
    applying.step = "router".into();
    let agent = Agent::scripted(
        vec![vec![
            Ok(at(Phase::Queued)),
            Ok(at(Phase::Validating)),
            Ok(at(Phase::Validating)),
            Ok(downloading),
            Ok(half),
            Ok(applying),
            Ok(at(Phase::HealthCheck)),
            Ok(at(Phase::Succeeded)),
        ]],
        vec![],
    );
    let dir = serve(&agent);
    let (lines, ended) = follow_lines(dir.path()).await;
    assert_eq!(
        lines,
        [
            "QUEUED",
            "VALIDATING",
            "DOWNLOADING  0 B / 4.0 KiB (0%)",
            "DOWNLOADING  2.0 KiB / 4.0 KiB (50%)",
            "APPLYING  router",
            "HEALTH_CHECK",
            "SUCCEEDED",
        ]
    );
    assert!(render::succeeded(&ended.unwrap()));
}

#[tokio::test]
async fn a_stream_broken_by_an_agent_restart_is_attached_again() {
    let dir = tempfile::tempdir().unwrap();
    let first = Agent::scripted(
        vec![vec![Ok(at(Phase::Queued)), Ok(at(Phase::Staging))]],
        vec![],
    );
    first.0.lock().unwrap().hang = true;
    let second = Agent::scripted(
        vec![vec![
            Ok(at(Phase::Applying)),
            Ok(at(Phase::RollingBack)),
            Ok(pb::Deployment {
                reason: "health check: router NOT_SERVING".into(),
                ..at(Phase::RolledBack)
            }),
        ]],
        // Back, but not ready at first.
        vec![
            Err(Status::unavailable("ota-agent starting")),
            Ok(at(Phase::Applying)),
        ],
    );
    let out = Restarting {
        out: Vec::new(),
        first: Some(Process::start(&first, &socket(dir.path()))),
        second: Some((second.clone(), socket(dir.path()))),
        running: None,
    };
    let mut progress = Progress::new(Mode::Lines, out);
    let ended = follow(dir.path(), ID, &mut progress, &[Duration::ZERO; 3]).await;
    let ended = ended.unwrap();
    assert_eq!(ended.reason, "health check: router NOT_SERVING");
    assert!(progress.out.running.is_some(), "the first agent died");
    let text = String::from_utf8(progress.out.out.clone()).unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "QUEUED",
            "STAGING",
            "APPLYING",
            "ROLLING_BACK",
            "ROLLED_BACK"
        ]
    );
    assert_eq!(second.calls(), (2, 1));
}

#[tokio::test]
async fn a_deployment_that_ended_while_nobody_followed_is_reported() {
    // The stream ends early, as a stopping agent's does.
    let agent = Agent::scripted(
        vec![vec![Ok(at(Phase::Applying))]],
        vec![Ok(at(Phase::Succeeded))],
    );
    let dir = serve(&agent);
    let (lines, ended) = follow_lines(dir.path()).await;
    assert_eq!(lines, ["APPLYING", "SUCCEEDED"]);
    assert!(render::succeeded(&ended.unwrap()));
    assert_eq!(agent.calls(), (1, 1));
}

#[tokio::test]
async fn following_gives_up_after_the_attempts_with_a_clear_error() {
    let not_ready = || Err(Status::unavailable("not ready"));
    let agent = Agent::scripted(
        vec![vec![Ok(at(Phase::Validating))]],
        vec![not_ready(), not_ready(), not_ready()],
    );
    let dir = serve(&agent);
    let (lines, ended) = follow_lines(dir.path()).await;
    assert_eq!(lines, ["VALIDATING"]);
    assert_eq!(
        ended.unwrap_err(),
        format!(
            "lost the ota-agent while following deployment {ID} (not ready); \
             `verdantctl deployments watch {ID}` follows it again"
        )
    );
    assert_eq!(agent.calls(), (3, 1));
}

#[tokio::test]
async fn an_agent_that_forgot_the_deployment_ends_the_following() {
    let agent = Agent::scripted(
        vec![vec![Ok(at(Phase::Validating))]],
        vec![Err(Status::not_found(format!("no deployment {ID}")))],
    );
    let dir = serve(&agent);
    let (_, ended) = follow_lines(dir.path()).await;
    assert_eq!(ended.unwrap_err(), format!("no deployment {ID}"));
    assert_eq!(agent.calls(), (1, 1));
}

#[tokio::test]
async fn errors_from_the_agent_are_its_own_words() {
    let agent = Agent::default();
    let dir = serve(&agent);
    let (lines, ended) = follow_lines(dir.path()).await;
    assert!(lines.is_empty());
    assert_eq!(ended.unwrap_err(), format!("no deployment {ID}"));
    let e = run(
        dir.path(),
        Some(DeploymentsCmd::Cancel { id: ID.into() }),
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(e, format!("deployment {ID} has ended"));
    let e = agent_error(&Status::resource_exhausted("queue full"));
    assert_eq!(e, "queue full");
    let e = agent_error(&Status::invalid_argument(""));
    assert_eq!(e, "ota-agent: Client specified an invalid argument");
}

#[tokio::test]
async fn deploy_sends_the_request_and_exits_by_the_outcome() {
    let agent = Agent::scripted(
        vec![vec![
            Ok(at(Phase::Validating)),
            Ok(pb::Deployment {
                reason: "the group is not valid".into(),
                problems: vec![pb::Problem {
                    path: "Id".into(),
                    message: "missing".into(),
                }],
                ..at(Phase::Failed)
            }),
        ]],
        vec![],
    );
    let dir = serve(&agent);
    let reset = DeployArgs {
        source: None,
        deployment_type: DeploymentType::Reset,
        no_wait: true,
    };
    deploy(dir.path(), reset, false).await.unwrap();
    let again = DeployArgs {
        source: None,
        deployment_type: DeploymentType::ForceReset,
        no_wait: false,
    };
    let e = deploy(dir.path(), again, true).await.unwrap_err();
    assert_eq!(e, format!("deployment {ID} ended FAILED"));
    let s = agent.0.lock().unwrap();
    let types: Vec<(&str, &str)> = s
        .deployed
        .iter()
        .map(|r| (r.deployment_type.as_str(), r.origin.as_str()))
        .collect();
    assert_eq!(
        types,
        [
            ("ResetDeployment", "verdantctl"),
            ("ForceResetDeployment", "verdantctl")
        ]
    );
}

#[tokio::test]
async fn no_agent_is_a_plain_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ended) = follow_lines(dir.path()).await;
    let e = ended.unwrap_err();
    assert!(e.starts_with("ota-agent not running at "), "{e}");
}

#[tokio::test]
async fn list_show_and_cancel_ask_the_agent() {
    let agent = Agent::scripted(
        vec![],
        vec![Ok(at(Phase::Succeeded)), Ok(at(Phase::Failed))],
    );
    let dir = serve(&agent);
    let show = || Some(DeploymentsCmd::Show { id: ID.into() });
    // Without a list, whether the core runs it is left out, no more.
    run(dir.path(), show(), false).await.unwrap();
    let e = run(dir.path(), None, false).await.unwrap_err();
    assert_eq!(e, "this core's ota-agent does not take deployments");
    agent.0.lock().unwrap().list = Some(pb::ListDeploymentsResponse {
        deployments: vec![at(Phase::Succeeded)],
        current: ID.into(),
    });
    run(dir.path(), show(), true).await.unwrap();
    run(dir.path(), None, true).await.unwrap();
    run(dir.path(), Some(DeploymentsCmd::List { limit: 1 }), false)
        .await
        .unwrap();
    assert_eq!(agent.calls(), (2, 0));
}

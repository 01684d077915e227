//! The deployed group on disk: a new device with its certificate, a new
//! route, and telling the running core to read the group again. The first
//! two work on files under the root (the core need not run); `reload` asks
//! the router over gRPC.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde::Serialize;
use verdant_common::paths::Layout;
use verdant_group::{Group, RouteEnd, Subscription};
use verdant_init::devcerts::{self, CertPaths};
use verdant_init::setup;
use verdant_proto::router::v1 as pb;
use verdant_proto::router::v1::router_client::RouterClient;

use crate::{dial, status_error};

#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// Issue a device certificate signed by the group CA
    /// (`config/certs/group-ca.pem`) and add the device to the deployed
    /// group; prints where the certificate and key are and its id.
    Add {
        /// The device's thing name; it connects with this MQTT client id.
        thing: String,
        /// Only issue the certificate; leave the group as it is.
        #[arg(long)]
        no_group: bool,
        /// Sign this certificate signing request (PEM) instead of making a
        /// key: the device's key never leaves it.
        #[arg(long, value_name = "FILE")]
        csr: Option<PathBuf>,
    },
    /// The group's devices: certificate id, expiry, revoked or not.
    List,
    /// Revoke a device's certificate on this core: the broker and the
    /// discovery API refuse it within a second, and its connections are
    /// closed. The device stays in the group until a deployment takes it out.
    Revoke {
        /// The thing name, or the certificate id (its SHA-256).
        thing_or_certificate: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RoutesCmd {
    /// Add a route to the deployed group's subscription table: messages
    /// from SOURCE on topics matching SUBJECT go to TARGET.
    Add {
        /// A thing name or function Id of the group, `cloud`,
        /// `GGShadowService`, or a thing's, function's or connector's ARN.
        source: String,
        /// An MQTT topic filter (`+` and `#` allowed).
        subject: String,
        /// As SOURCE.
        target: String,
        /// The route's Id (default: the first free `route-N`).
        #[arg(long)]
        id: Option<String>,
    },
}

/// A function to add to the deployed group (`functions add`).
#[derive(Debug, clap::Args)]
pub struct NewFunction {
    /// The function's name; its code goes in `<root>/functions/<NAME>/<VERSION>/`.
    pub name: String,
    /// The handler: `<module>.<function>` (`hello.handler` is `hello.py`'s
    /// or `hello.js`'s `handler`), a Java class, or an executable's file name.
    #[arg(long)]
    pub executable: String,
    /// The version its ARN is qualified with.
    #[arg(long, default_value = "1")]
    pub version: String,
    /// One long-lived instance started with the core (default: on demand).
    #[arg(long)]
    pub pinned: bool,
    /// Run it as a plain process (`NoContainer`) rather than in a
    /// `GreengrassContainer`, which needs a core running as root.
    #[arg(long)]
    pub no_container: bool,
    /// Seconds an invocation may take.
    #[arg(long, default_value_t = 3)]
    pub timeout: u32,
    /// Its memory limit in KiB (a container's; Greengrass's `MemorySize`).
    #[arg(long, default_value_t = 16384)]
    pub memory: u32,
}

#[derive(Serialize)]
struct Issued {
    thing: String,
    certificate: PathBuf,
    /// None when a CSR was signed: the key is the device's.
    private_key: Option<PathBuf>,
    ca: PathBuf,
    certificate_id: String,
    /// The entry for `DeviceDefinitionVersion.Devices`.
    device: verdant_group::Thing,
    /// The group file the device was added to, if it was.
    group: Option<PathBuf>,
}

/// Runs the commands that work on the root's files; gives back `None` for
/// the others.
pub fn offline(root: &Path, command: &crate::Cmd, json: bool) -> Option<Result<(), String>> {
    match command {
        crate::Cmd::Device(DeviceCmd::Add {
            thing,
            no_group,
            csr,
        }) => Some(add_device(root, thing, *no_group, csr.as_deref(), json)),
        crate::Cmd::Device(DeviceCmd::List) => Some(crate::devices::list(root, json)),
        crate::Cmd::Ca { command } => Some(crate::ca::run(root, command.as_ref(), json)),
        crate::Cmd::Device(DeviceCmd::Revoke {
            thing_or_certificate,
        }) => Some(crate::devices::revoke(root, thing_or_certificate, json)),
        crate::Cmd::Routes {
            command:
                Some(RoutesCmd::Add {
                    source,
                    subject,
                    target,
                    id,
                }),
        } => Some(add_route(root, source, subject, target, id.clone())),
        crate::Cmd::Functions {
            command: Some(crate::functions::FunctionsCmd::Add(new)),
        } => Some(add_function(root, new)),
        _ => None,
    }
}

fn add_device(
    root: &Path,
    thing: &str,
    no_group: bool,
    csr: Option<&Path>,
    json: bool,
) -> Result<(), String> {
    let layout = layout(root)?;
    let group_file = layout.current_group();
    let current = Group::load(&group_file).map_err(|e| e.to_string());
    // Check the group first, so a refused device leaves no certificate behind.
    if !no_group && current.as_ref()?.thing(thing).is_some() {
        return Err(format!("the group has a thing named `{thing}` already"));
    }
    let certs = CertPaths {
        dir: layout.certs_dir(),
    };
    let id = match csr {
        None => devcerts::issue_device(&certs, thing),
        Some(file) => {
            let pem = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            devcerts::sign_device_csr(&certs, thing, &pem)
        }
    }
    .map_err(|e| e.to_string())?;
    let device = match &current {
        Ok(group) => group.core().sibling(thing, &id),
        Err(_) => setup::local_thing(thing, &id),
    };
    if let (false, Ok(mut group)) = (no_group, current) {
        group.device_definition_version.devices.push(device.clone());
        save(&group_file, &group)?;
    }
    let issued = Issued {
        certificate: certs.device_cert(thing),
        private_key: csr.is_none().then(|| certs.device_key(thing)),
        ca: certs.ca_cert(),
        certificate_id: id,
        device,
        group: (!no_group).then_some(group_file),
        thing: thing.to_string(),
    };
    if json {
        println!("{}", serde_json::to_string(&issued).expect("serializes"));
        return Ok(());
    }
    println!("certificate:    {}", issued.certificate.display());
    match &issued.private_key {
        Some(key) => println!("private key:    {} (0600)", key.display()),
        None => println!("private key:    the device's own (the CSR was signed)"),
    }
    println!("group CA:       {}", issued.ca.display());
    println!("certificate id: {}", issued.certificate_id);
    match &issued.group {
        Some(file) => {
            println!("added to:       {}", file.display());
            println!("`verdantctl reload` lets it in on a running core.");
        }
        None => println!(
            "device entry for DeviceDefinitionVersion.Devices:\n{}",
            serde_json::to_string_pretty(&issued.device).expect("serializes")
        ),
    }
    Ok(())
}

/// Adds a subscription (route) to the deployed group.
fn add_route(
    root: &Path,
    source: &str,
    subject: &str,
    target: &str,
    id: Option<String>,
) -> Result<(), String> {
    let layout = layout(root)?;
    let file = layout.current_group();
    let mut group = Group::load(&file).map_err(|e| e.to_string())?;
    let source = endpoint(&group, source)?;
    let target = endpoint(&group, target)?;
    let routes = &group.subscription_definition_version.subscriptions;
    let id = id.unwrap_or_else(|| {
        (1..=routes.len() + 1)
            .map(|n| format!("route-{n}"))
            .find(|id| routes.iter().all(|r| &r.id != id))
            .expect("a free id")
    });
    let route = Subscription {
        id,
        source,
        subject: subject.to_string(),
        target,
    };
    group
        .subscription_definition_version
        .subscriptions
        .push(route.clone());
    save(&file, &group)?;
    println!(
        "added route {}: {} -> {} on {}",
        route.id, route.source, route.target, route.subject
    );
    println!("`verdantctl reload` takes it into a running core's table.");
    Ok(())
}

/// Adds a function to the deployed group, in the core's region and account,
/// and makes its code directory.
fn add_function(root: &Path, new: &NewFunction) -> Result<(), String> {
    use verdant_group::{Execution, Function, FunctionConfiguration, FunctionEnvironment};
    let layout = layout(root)?;
    let file = layout.current_group();
    let mut group = Group::load(&file).map_err(|e| e.to_string())?;
    // arn:<partition>:iot:<region>:<account>:thing/<name>
    let parts: Vec<&str> = group.core().thing_arn.split(':').collect();
    let (partition, region, account) = (parts[1], parts[3], parts[4]);
    let arn = format!(
        "arn:{partition}:lambda:{region}:{account}:function:{}:{}",
        new.name, new.version
    );
    let functions = &mut group.function_definition_version.functions;
    if functions
        .iter()
        .any(|f| f.id == new.name || f.function_arn == arn)
    {
        return Err(format!("the group has a function `{}` already", new.name));
    }
    functions.push(Function {
        id: new.name.clone(),
        function_arn: arn.clone(),
        function_configuration: FunctionConfiguration {
            pinned: new.pinned,
            timeout: Some(new.timeout),
            memory_size: Some(new.memory),
            executable: Some(new.executable.clone()),
            environment: new.no_container.then(|| FunctionEnvironment {
                execution: Some(Execution {
                    isolation_mode: Some(verdant_group::IsolationMode::NoContainer),
                    run_as: None,
                }),
                ..FunctionEnvironment::default()
            }),
            ..FunctionConfiguration::default()
        },
    });
    save(&file, &group)?;
    let code = layout.functions_dir().join(&new.name).join(&new.version);
    std::fs::create_dir_all(&code).map_err(|e| format!("cannot create {}: {e}", code.display()))?;
    println!("added function {arn}");
    println!("its code goes in {}", code.display());
    println!("`verdantctl restart lambda-runner` starts it on a running core.");
    Ok(())
}

/// A subscription's Source or Target: `cloud`, `GGShadowService`, an ARN,
/// or the name of a thing or the Id of a function of the group (given as
/// its ARN).
fn endpoint(group: &Group, name: &str) -> Result<String, String> {
    if let Some(thing) = group.thing(name) {
        return Ok(thing.thing_arn.clone());
    }
    let functions = &group.function_definition_version.functions;
    if let Some(function) = functions.iter().find(|f| f.id == name) {
        return Ok(function.function_arn.clone());
    }
    RouteEnd::resolve(group, name).map_err(|why| {
        if name.contains(':') {
            why
        } else {
            format!("no thing or function named `{name}` in the group ({why})")
        }
    })?;
    Ok(name.to_string())
}

/// Has the router read the group's table again (and so the broker its
/// devices), then the lambda-runner its functions.
pub async fn reload(dir: &Path) -> Result<(), String> {
    let mut api = RouterClient::new(dial(dir, "router").await?);
    let r = api
        .reload_table(pb::ReloadTableRequest {})
        .await
        .map_err(|e| status_error(&e))?
        .into_inner();
    println!(
        "group {}: table version {} with {} routes",
        r.group_id, r.version, r.routes
    );
    if !dir.join("lambda-runner.sock").exists() {
        return Ok(());
    }
    let mut api = verdant_proto::lambda::v1::lambda_client::LambdaClient::new(
        dial(dir, "lambda-runner").await?,
    );
    let f = api
        .apply_group(verdant_proto::lambda::v1::ApplyGroupRequest {})
        .await
        .map_err(|e| status_error(&e))?
        .into_inner();
    println!(
        "functions: {} started, {} restarted, {} stopped, {} unchanged",
        f.started.len(),
        f.restarted.len(),
        f.stopped.len(),
        f.unchanged.len()
    );
    Ok(())
}

pub(crate) fn layout(root: &Path) -> Result<Layout, String> {
    Layout::new(root, None).map_err(|e| format!("root {}: {e}", root.display()))
}

/// Validates `group` and writes it over `file` atomically (a new file
/// beside it, synced, then renamed over it).
fn save(file: &Path, group: &Group) -> Result<(), String> {
    let json = serde_json::to_string_pretty(group).expect("a group serializes") + "\n";
    Group::parse(json.as_bytes()).map_err(|problems| {
        problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let tmp = file.with_extension("json.new");
    let err = |e: std::io::Error| format!("cannot write {}: {e}", file.display());
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(json.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, file).map_err(err)
}

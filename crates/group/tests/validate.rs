use verdant_group::{Group, RouteEnd, Thing, topic_filter_problem};

const FP: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn thing(name: &str) -> Thing {
    Thing {
        id: name.into(),
        thing_arn: format!("arn:aws:iot:us-east-1:000000000000:thing/{name}"),
        certificate_arn: format!("arn:aws:iot:us-east-1:000000000000:cert/{FP}"),
        sync_shadow: false,
    }
}

fn sample() -> serde_json::Value {
    serde_json::to_value(Group::sample(&thing("core"), &thing("dev1"))).unwrap()
}

fn problems(v: &serde_json::Value) -> Vec<String> {
    match Group::parse(v.to_string().as_bytes()) {
        Ok(_) => Vec::new(),
        Err(p) => p.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn sample_round_trips_and_validates() {
    let v = sample();
    let g = Group::parse(v.to_string().as_bytes()).unwrap();
    assert_eq!(g.core().thing_name(), "core");
    assert_eq!(g.thing("dev1").unwrap().certificate_id(), FP);
    let sub = &g.subscription_definition_version.subscriptions[1];
    assert_eq!(RouteEnd::resolve(&g, &sub.target), Ok(RouteEnd::Cloud));
    assert_eq!(
        RouteEnd::resolve(&g, &sub.source),
        Ok(RouteEnd::Thing(thing("dev1").thing_arn))
    );
}

#[test]
fn unknown_target_names_path_and_reason() {
    let mut v = sample();
    v["SubscriptionDefinitionVersion"]["Subscriptions"][3]["Target"] =
        "arn:aws:lambda:us-east-1:000000000000:function:missing:1".into();
    let p = problems(&v);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with(
            "SubscriptionDefinitionVersion.Subscriptions[3].Target: unknown function arn:aws:lambda"
        ),
        "{p:?}"
    );
}

#[test]
fn shape_errors_carry_the_json_path() {
    let mut v = sample();
    v["DeviceDefinitionVersion"]["Devices"][0]["Colour"] = "red".into();
    let p = problems(&v);
    assert!(
        p[0].starts_with("DeviceDefinitionVersion.Devices[0].Colour: unknown field `Colour`"),
        "{p:?}"
    );

    let mut v = sample();
    v["LoggerDefinitionVersion"]["Loggers"][0]["Level"] = "LOUD".into();
    let p = problems(&v);
    assert!(
        p[0].starts_with("LoggerDefinitionVersion.Loggers[0].Level: unknown variant `LOUD`"),
        "{p:?}"
    );

    let p = problems(&serde_json::json!("not a group"));
    assert!(p[0].starts_with("(document): invalid type"), "{p:?}");
}

#[test]
fn semantic_rules() {
    let mut v = sample();
    v["CoreDefinitionVersion"]["Cores"] = serde_json::json!([]);
    assert!(problems(&v).iter().any(|p| p.contains("exactly one core")));

    let mut v = sample();
    v["DeviceDefinitionVersion"]["Devices"][0]["CertificateArn"] =
        "arn:aws:iot:r:a:cert/xyz".into();
    v["SubscriptionDefinitionVersion"]["Subscriptions"][0]["Subject"] = "a/#/b".into();
    v["SubscriptionDefinitionVersion"]["Subscriptions"][1]["Id"] = "device-to-device".into();
    v["FunctionDefinitionVersion"]["Functions"] = serde_json::json!([
        {"Id": "f", "FunctionArn": "arn:aws:lambda:us-east-1:1:function:f:$LATEST"},
        {"Id": "g", "FunctionArn": "arn:aws:lambda:us-east-1:1:function:g:1",
         "FunctionConfiguration": {"Timeout": 0, "Environment": {"ResourceAccessPolicies": [{"ResourceId": "nope"}]}}}
    ]);
    let p = problems(&v);
    let has = |s: &str| p.iter().any(|x| x.contains(s));
    assert!(
        has("Devices[0].CertificateArn: `arn:aws:iot:r:a:cert/xyz` is not a certificate ARN"),
        "{p:?}"
    );
    assert!(
        has("Subscriptions[0].Subject: `#` must be a whole level and the last one"),
        "{p:?}"
    );
    assert!(
        has("Subscriptions[1].Id: duplicate Id `device-to-device`"),
        "{p:?}"
    );
    assert!(
        has(
            "Functions[0].FunctionArn: `arn:aws:lambda:us-east-1:1:function:f:$LATEST`: $LATEST cannot be deployed"
        ),
        "{p:?}"
    );
    assert!(
        has("Functions[1].FunctionConfiguration.Timeout: must be at least 1 second"),
        "{p:?}"
    );
    assert!(
        has("ResourceAccessPolicies[0].ResourceId: unknown resource `nope`"),
        "{p:?}"
    );
}

#[test]
fn topic_filters() {
    for ok in [
        "a",
        "a/b",
        "+",
        "#",
        "a/+/c",
        "a/#",
        "$aws/things/x/shadow/#",
        "/",
    ] {
        assert_eq!(topic_filter_problem(ok), None, "{ok}");
    }
    for bad in ["", "a#", "a/#/b", "a+/b", "a/b+", "x\0"] {
        assert!(topic_filter_problem(bad).is_some(), "{bad:?}");
    }
}

const HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn with_function(arn: &str) -> serde_json::Value {
    let mut v = sample();
    v["FunctionDefinitionVersion"]["Functions"] =
        serde_json::json!([{"Id": "f", "FunctionArn": arn}]);
    v
}

#[test]
fn artifacts_by_url_round_trip() {
    let arn = "arn:aws:lambda:us-east-1:1:function:f:3";
    let mut v = with_function(arn);
    v["Artifacts"] = serde_json::json!([
        {"FunctionArn": arn, "Url": "https://example.com/code/f-3.zip?sig=x", "Sha256": HASH}
    ]);
    let g = Group::parse(v.to_string().as_bytes()).unwrap();
    assert_eq!(g.artifacts.len(), 1);
    assert_eq!(g.artifacts[0].function_arn.as_deref(), Some(arn));
    assert_eq!(g.artifacts[0].sha256, HASH);
    assert_eq!(
        serde_json::to_value(&g).unwrap()["Artifacts"],
        v["Artifacts"]
    );

    v["Artifacts"][0]["Url"] = "file:///srv/code/f-3.zip".into();
    assert_eq!(problems(&v), Vec::<String>::new());

    // No key, no artifacts, and none written back.
    let g = Group::parse(sample().to_string().as_bytes()).unwrap();
    assert!(g.artifacts.is_empty());
    assert!(serde_json::to_value(&g).unwrap().get("Artifacts").is_none());
}

#[test]
fn artifact_problems_carry_their_paths() {
    let arn = "arn:aws:lambda:us-east-1:1:function:f:3";
    let mut v = with_function(arn);
    v["Artifacts"] = serde_json::json!([
        {"FunctionArn": "arn:aws:lambda:us-east-1:1:function:f:4", "Url": "https://h/a.zip", "Sha256": HASH},
        {"FunctionArn": arn, "Url": "http://h/a.zip", "Sha256": HASH.to_uppercase()},
        {"FunctionArn": arn, "Url": "file://host/a.zip", "Sha256": &HASH[1..]},
        {"FunctionArn": arn, "Url": "https:///a.zip", "Sha256": HASH},
    ]);
    let p = problems(&v);
    let expected = [
        "Artifacts[0].FunctionArn: unknown function arn:aws:lambda:us-east-1:1:function:f:4",
        "Artifacts[1].Url: unsupported URL scheme",
        "Artifacts[1].Sha256: a SHA-256 is 64 lowercase hex digits",
        "Artifacts[2].FunctionArn: arn:aws:lambda:us-east-1:1:function:f:3 has an artifact already",
        "Artifacts[2].Url: a file URL is `file:///<absolute path>`",
        "Artifacts[2].Sha256: a SHA-256 is 64 lowercase hex digits",
        "Artifacts[3].FunctionArn: arn:aws:lambda:us-east-1:1:function:f:3 has an artifact already",
        "Artifacts[3].Url: an https URL names a host",
    ];
    for e in expected {
        assert!(p.iter().any(|x| x.starts_with(e)), "{e} not in {p:?}");
    }
    assert_eq!(p.len(), expected.len(), "{p:?}");

    v["Artifacts"][0]["Size"] = 3.into();
    let p = problems(&v);
    assert!(
        p[0].starts_with("Artifacts[0].Size: unknown field `Size`"),
        "{p:?}"
    );
}

#[test]
fn model_resources_are_brought_by_artifacts_with_their_hash() {
    let mut v = sample();
    let model = |id: &str, data: serde_json::Value| serde_json::json!({ "Id": id, "Name": id, "ResourceDataContainer": data });
    v["ResourceDefinitionVersion"] = serde_json::json!({ "Resources": [
        model("s3", serde_json::json!({ "S3MachineLearningModelResourceData": {
            "S3Uri": "s3://models/squeezenet.tar.gz", "DestinationPath": "/ml/squeezenet" } })),
        model("local", serde_json::json!({ "S3MachineLearningModelResourceData": {
            "S3Uri": "file:///srv/models/m.onnx", "DestinationPath": "/ml/m" } })),
        model("sagemaker", serde_json::json!({ "SageMakerMachineLearningModelResourceData": {
            "SageMakerJobArn": "arn:aws:sagemaker:us-east-1:1:training-job/j", "DestinationPath": "/ml/j" } })),
        model("missing", serde_json::json!({ "S3MachineLearningModelResourceData": {
            "S3Uri": "s3://models/other.zip", "DestinationPath": "/ml/other" } })),
    ]});
    v["Artifacts"] = serde_json::json!([
        { "ResourceId": "s3", "Sha256": HASH },
        { "ResourceId": "local", "Sha256": HASH },
        { "ResourceId": "sagemaker", "Sha256": HASH },
        { "ResourceId": "nope", "Url": "https://h/m.zip", "Sha256": HASH },
        { "ResourceId": "s3", "FunctionArn": "arn:aws:lambda:us-east-1:1:function:f:1", "Sha256": HASH },
    ]);
    let p = problems(&v);
    let expected = [
        "Artifacts[2].Url: required",
        "Artifacts[3].ResourceId: `nope` is not a machine learning model resource of this group",
        "Artifacts[4]: names a FunctionArn or a ResourceId (exactly one)",
    ];
    for e in expected {
        assert!(p.iter().any(|x| x.starts_with(e)), "{e} not in {p:?}");
    }
    assert_eq!(p.len(), expected.len(), "{p:?}");
    v["Artifacts"] = serde_json::json!([
        { "ResourceId": "s3", "Sha256": HASH },
        { "ResourceId": "local", "Sha256": HASH },
        { "ResourceId": "sagemaker", "Url": "https://h/j.tar.gz", "Sha256": HASH },
        { "ResourceId": "missing", "Url": "https://h/other.zip", "Sha256": HASH },
    ]);
    assert_eq!(problems(&v), Vec::<String>::new());
    let g = Group::parse(v.to_string().as_bytes()).unwrap();
    assert_eq!(
        verdant_group::s3_url("s3://my.models/a b/m#1.onnx").as_deref(),
        Some("https://s3.amazonaws.com/my.models/a%20b/m%231.onnx")
    );
    let urls: Vec<_> = g
        .artifacts
        .iter()
        .map(|a| g.artifact_url(a).unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            "https://models.s3.amazonaws.com/squeezenet.tar.gz",
            "file:///srv/models/m.onnx",
            "https://h/j.tar.gz",
            "https://h/other.zip"
        ]
    );
}

const MODBUS: &str =
    "arn:aws:greengrass:us-east-1::/connectors/ModbusRTUProtocolAdapter/versions/3";
const METRICS: &str = "arn:aws:greengrass:us-east-1::/connectors/DeviceMetrics/versions/1";

fn with_connectors(connectors: &serde_json::Value) -> serde_json::Value {
    let mut v = sample();
    v["ResourceDefinitionVersion"] = serde_json::json!({ "Resources": [
        { "Id": "serial", "Name": "serial", "ResourceDataContainer": {
            "LocalDeviceResourceData": { "SourcePath": "/dev/ttyS2" } } },
        { "Id": "vol", "Name": "vol", "ResourceDataContainer": {
            "LocalVolumeResourceData": { "SourcePath": "/srv", "DestinationPath": "/srv" } } },
    ]});
    v["ConnectorDefinitionVersion"] = serde_json::json!({ "Connectors": connectors });
    v
}

#[test]
fn connectors_are_routed_by_their_arn_with_parameters_as_their_schema_says() {
    let mut v = with_connectors(&serde_json::json!([
        { "Id": "modbus", "ConnectorArn": MODBUS, "Parameters": {
            "ModbusSerialPort-ResourceId": "serial", "ModbusSerialPort": "/dev/ttyS2" } },
        { "Id": "metrics", "ConnectorArn": METRICS },
    ]));
    v["SubscriptionDefinitionVersion"]["Subscriptions"] = serde_json::json!([
        { "Id": "to-modbus", "Source": thing("dev1").thing_arn,
          "Subject": "modbus/adapter/request", "Target": MODBUS },
        { "Id": "from-modbus", "Source": MODBUS, "Subject": "modbus/adapter/response",
          "Target": thing("dev1").thing_arn },
        { "Id": "metrics", "Source": METRICS, "Subject": "verdant/metrics", "Target": "cloud" },
    ]);
    assert_eq!(problems(&v), Vec::<String>::new());
    let g = Group::parse(v.to_string().as_bytes()).unwrap();
    assert_eq!(
        RouteEnd::resolve(&g, MODBUS),
        Ok(RouteEnd::Connector(MODBUS.into()))
    );
}

#[test]
fn connector_problems_carry_their_json_paths() {
    let v = with_connectors(&serde_json::json!([
        { "Id": "modbus", "ConnectorArn": MODBUS, "Parameters": {
            "ModbusSerialPort-ResourceId": "vol", "ModbusBaudRate": "fast",
            "ModbusTimeoutMs": "0", "IsolationMode": "Jail", "Colour": "red" } },
        { "Id": "metrics", "ConnectorArn": METRICS, "Parameters": {
            "PublishTopic": "verdant/#", "PublishInterval": "0" } },
        { "Id": "again", "ConnectorArn": METRICS },
        { "Id": "unknown", "ConnectorArn": "arn:aws:greengrass:us-east-1::/connectors/Kinesis/versions/1" },
        { "Id": "old", "ConnectorArn": "arn:aws:greengrass:us-east-1::/connectors/DeviceMetrics/versions/7" },
        { "Id": "notarn", "ConnectorArn": "modbus" },
    ]));
    let p = problems(&v);
    let at = "ConnectorDefinitionVersion.Connectors";
    for want in [
        format!(
            "{at}[0].Parameters.ModbusSerialPort-ResourceId: resource `vol` is not a local device resource"
        ),
        format!("{at}[0].Parameters.ModbusBaudRate: `fast` is not an integer"),
        format!("{at}[0].Parameters.ModbusTimeoutMs: 0 is out of range 10..60000"),
        format!(
            "{at}[0].Parameters.IsolationMode: `Jail` is not one of GreengrassContainer, NoContainer"
        ),
        format!(
            "{at}[0].Parameters.Colour: ModbusRTUProtocolAdapter version 3 takes no such parameter"
        ),
        format!(
            "{at}[0].Parameters.ModbusSerialPort: required for a serial line (or set ModbusTcpAddress)"
        ),
        format!("{at}[1].Parameters.PublishTopic: `verdant/#` is not a topic to publish on"),
        format!("{at}[1].Parameters.PublishInterval: 0 is out of range 1..86400"),
        format!(
            "{at}[2].ConnectorArn: connector DeviceMetrics is in the group already (Connectors[1])"
        ),
        format!("{at}[3].ConnectorArn: no connector `Kinesis` in this release"),
        format!("{at}[4].ConnectorArn: connector DeviceMetrics has no version 7"),
        format!("{at}[5].ConnectorArn: `modbus` is not a connector ARN"),
    ] {
        assert!(p.iter().any(|x| x.starts_with(&want)), "{want}\n{p:#?}");
    }
    assert_eq!(p.len(), 12, "{p:#?}");
    // The port is the device resource's.
    let v = with_connectors(&serde_json::json!([
        { "Id": "modbus", "ConnectorArn": MODBUS, "Parameters": {
            "ModbusSerialPort-ResourceId": "serial", "ModbusSerialPort": "/dev/ttyS3" } },
    ]));
    assert_eq!(
        problems(&v),
        [format!(
            "{at}[0].Parameters.ModbusSerialPort: `/dev/ttyS3` is not the SourcePath of resource \
             `serial` (`/dev/ttyS2`)"
        )]
    );
    // Over TCP, the serial parameters are not needed.
    let v = with_connectors(&serde_json::json!([
        { "Id": "modbus", "ConnectorArn": MODBUS, "Parameters": {
            "ModbusTcpAddress": "127.0.0.1:502" } },
    ]));
    assert_eq!(problems(&v), Vec::<String>::new());
}

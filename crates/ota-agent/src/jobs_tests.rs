//! The job documents, the reports and the jobs table.
use super::*;

#[test]
fn an_execution_is_read_from_start_next_and_notify_next() {
    let accepted = json!({
        "clientToken": "t",
        "execution": {
            "jobId": "job-1", "status": "QUEUED", "executionNumber": 1, "versionNumber": 1,
            "jobDocument": { "verdant": { "group": { "Id": "g" } } },
        },
    });
    let e = execution(accepted.to_string().as_bytes()).unwrap();
    assert_eq!(e.job_id, "job-1");
    assert_eq!(e.document["verdant"]["group"]["Id"], "g");
    // No job to do, or no JSON.
    assert_eq!(execution(br#"{"timestamp": 1}"#), None);
    assert_eq!(execution(br#"{"execution": {"jobId": ""}}"#), None);
    assert_eq!(execution(b"not json"), None);
}

#[test]
fn a_document_becomes_a_deploy_request_or_says_why_not() {
    let inline =
        json!({ "verdant": { "deploymentType": "NewDeployment", "group": { "Id": "g" } } });
    let r = request("job-1", &inline).unwrap();
    assert_eq!(r.origin, "iot-jobs:job-1");
    assert_eq!(r.deployment_type, "NewDeployment");
    let Some(Source::GroupJson(bytes)) = r.source else {
        panic!("{r:?}")
    };
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap(),
        json!({ "Id": "g" })
    );

    let hash = "AB".repeat(32);
    let by_url = json!({ "verdant": { "groupUrl": "https://example.com/g.json", "sha256": hash } });
    let r = request("j", &by_url).unwrap();
    assert_eq!(
        r.source,
        Some(Source::GroupUrl(GroupUrl {
            url: "https://example.com/g.json".into(),
            sha256: "ab".repeat(32),
        }))
    );
    // A reset names no group.
    let reset = json!({ "verdant": { "deploymentType": "ResetDeployment" } });
    assert_eq!(request("j", &reset).unwrap().source, None);

    for (doc, why) in [
        (json!({ "operation": "reboot" }), NOT_VERDANT),
        (Value::Null, NOT_VERDANT),
        (json!({ "verdant": "yes" }), NOT_VERDANT),
        (
            json!({ "verdant": { "deploymentType": 1 } }),
            "deploymentType",
        ),
        (json!({ "verdant": { "group": [] } }), "verdant.group"),
        (
            json!({ "verdant": { "group": {}, "groupUrl": "https://x" } }),
            "not both",
        ),
        (
            json!({ "verdant": { "groupUrl": "file:///etc/passwd", "sha256": hash } }),
            "https://",
        ),
        (
            json!({ "verdant": { "groupUrl": "https://x/g.json", "sha256": "abc" } }),
            "verdant.sha256",
        ),
    ] {
        let err = request("j", &doc).unwrap_err();
        assert!(err.contains(why), "{doc}: {err}");
    }
}

#[test]
fn a_deployment_s_status_in_jobs_terms() {
    let mut d = Deployment {
        deployment_id: "d1".into(),
        ..Deployment::default()
    };
    d.set_phase(Phase::Validating);
    let (s, details) = status(&d);
    assert_eq!(s, "IN_PROGRESS");
    assert_eq!(
        Value::Object(details),
        json!({ "deploymentId": "d1", "phase": "VALIDATING" })
    );
    d.set_phase(Phase::Succeeded);
    assert_eq!(status(&d).0, "SUCCEEDED");
    for phase in [Phase::Failed, Phase::RolledBack, Phase::Cancelled] {
        d.set_phase(phase);
        d.reason = "é".repeat(DETAIL_MAX);
        let (s, details) = status(&d);
        assert_eq!(s, "FAILED");
        assert_eq!(details["phase"], phase.as_str_name());
        assert!(details["reason"].as_str().unwrap().len() <= DETAIL_MAX);
    }
    let origin = |o: &str| Deployment {
        origin: o.into(),
        ..Deployment::default()
    };
    assert_eq!(job_of(&origin("iot-jobs:job-1")), Some("job-1"));
    assert_eq!(job_of(&origin("verdantctl")), None);
    assert_eq!(job_of(&origin("iot-jobs:")), None);
}

#[test]
fn the_jobs_table_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deployments.db");
    {
        let ledger = Ledger::open(&path).unwrap();
        ledger.insert("job-1", "d1", "").unwrap();
        ledger.insert("job-2", "", NOT_VERDANT).unwrap();
        ledger.insert("job-3", "d3", "").unwrap();
        // Taken once: a second insert changes nothing.
        ledger.insert("job-1", "d9", "").unwrap();
        ledger.reported("job-3").unwrap();
    }
    let ledger = Ledger::open(&path).unwrap();
    assert_eq!(
        ledger.get("job-1").unwrap(),
        Some(Taken {
            deployment_id: "d1".into(),
            failure: String::new(),
            reported: false,
        })
    );
    assert!(ledger.get("job-3").unwrap().unwrap().reported);
    assert_eq!(ledger.get("job-4").unwrap(), None);
    let unreported: Vec<String> = ledger
        .unreported()
        .unwrap()
        .into_iter()
        .map(|(j, _)| j)
        .collect();
    assert_eq!(unreported, ["job-1", "job-2"]);
    // Beside the deployments, in the same file.
    crate::store::Store::open(&path).unwrap();
}

#[test]
fn an_update_document_is_read_and_its_end_taken_from_init_s_record() {
    let doc = json!({ "verdant": { "update": { "version": "2.0.0", "force": true } } });
    let r = update_request(&doc).unwrap().unwrap();
    assert_eq!(
        (r.version.as_str(), r.force, r.repository.as_str()),
        ("2.0.0", true, "")
    );
    assert!(update_request(&json!({ "verdant": { "group": {} } })).is_none());
    for (bad, why) in [
        (
            json!({ "verdant": { "update": "2.0.0" } }),
            "must be an object",
        ),
        (
            json!({ "verdant": { "update": { "repository": "http://x" } } }),
            "https://",
        ),
        (
            json!({ "verdant": { "update": { "force": "yes" } } }),
            "true or false",
        ),
    ] {
        let e = update_request(&bad).unwrap().unwrap_err();
        assert!(e.contains(why), "{e}");
    }
    let running = verdant_common::version::version();
    let record = |from: &str, to: &str, phase: &str| json!({ "from": from, "to": to, "phase": phase, "reason": "broker did not run" });
    let (status, details) = update_end(running, &record("0.0.1", running, "succeeded")).unwrap();
    assert_eq!((status, &details["update"]), ("SUCCEEDED", &json!(running)));
    // Rolled back from the version asked for: failed, with why.
    let (status, details) = update_end("9.9.9", &record("9.9.9", running, "rolled back")).unwrap();
    assert_eq!(status, "FAILED");
    assert_eq!(details["reason"], "broker did not run");
    // Still switching, or another update's record: not ended.
    assert!(update_end(running, &record("0.0.1", running, "switching")).is_none());
    assert!(update_end("9.9.9", &record("0.0.1", "8.8.8", "succeeded")).is_none());
}

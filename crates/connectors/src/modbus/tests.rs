use super::*;

fn request(r: &Value) -> Request {
    parse(
        json!({ "request": r, "id": "TestRequest" })
            .to_string()
            .as_bytes(),
    )
}

#[test]
fn every_operation_of_greengrass_s_adapter_is_read() {
    let cases = [
        (
            json!({"operation": "ReadCoilsRequest", "device": 1, "address": 1, "count": 1}),
            Operation::ReadCoils {
                address: 1,
                count: 1,
            },
        ),
        (
            json!({"operation": "ReadDiscreteInputsRequest", "device": 1, "address": 1, "count": 3}),
            Operation::ReadDiscreteInputs {
                address: 1,
                count: 3,
            },
        ),
        (
            json!({"operation": "ReadHoldingRegistersRequest", "device": 1, "address": 1, "count": 2}),
            Operation::ReadHoldingRegisters {
                address: 1,
                count: 2,
            },
        ),
        // As Greengrass's documentation writes it.
        (
            json!({"operation": "ReadInputRegistersRequest", "device": 1, "address": 1, "value": 1}),
            Operation::ReadInputRegisters {
                address: 1,
                count: 1,
            },
        ),
        (
            json!({"operation": "WriteSingleCoilRequest", "device": 1, "address": 1, "value": 1}),
            Operation::WriteSingleCoil {
                address: 1,
                value: true,
            },
        ),
        (
            json!({"operation": "WriteSingleRegisterRequest", "device": 1, "address": 1, "value": 7}),
            Operation::WriteSingleRegister {
                address: 1,
                value: 7,
            },
        ),
        (
            json!({"operation": "WriteMultipleCoilsRequest", "device": 1, "address": 1, "values": [1, 0, false, true]}),
            Operation::WriteMultipleCoils {
                address: 1,
                values: vec![true, false, false, true],
            },
        ),
        (
            json!({"operation": "WriteMultipleRegistersRequest", "device": 1, "address": 1, "values": [20, 30, 10]}),
            Operation::WriteMultipleRegisters {
                address: 1,
                values: vec![20, 30, 10],
            },
        ),
        (
            json!({"operation": "MaskWriteRegisterRequest", "device": 1, "address": 1, "and_mask": 175, "or_mask": 1}),
            Operation::MaskWriteRegister {
                address: 1,
                and_mask: 175,
                or_mask: 1,
            },
        ),
        (
            json!({"operation": "ReadWriteMultipleRegistersRequest", "device": 1, "read_address": 1,
                   "read_count": 2, "write_address": 3, "write_registers": [20, 30, 40]}),
            Operation::ReadWriteMultipleRegisters {
                read_address: 1,
                read_count: 2,
                write_address: 3,
                write_registers: vec![20, 30, 40],
            },
        ),
    ];
    for (r, want) in cases {
        let got = request(&r);
        assert_eq!(got.checked, Ok((1, want)), "{r}");
    }
}

#[test]
fn a_bad_request_is_answered_no_response_with_its_id_and_why() {
    for (r, why) in [
        (
            json!({"operation": "ReadCoilsRequest", "device": 1, "address": "1", "count": 1}),
            "invalid `address` field: expected an integer 0..65535, got \"1\"",
        ),
        (
            json!({"operation": "ReadCoilsRequest", "device": 300, "address": 1, "count": 1}),
            "invalid `device` field: 300 is more than 247",
        ),
        (
            json!({"operation": "ReadCoilsRequest", "device": 1, "address": 1}),
            "the request has no `count` field",
        ),
        (
            json!({"operation": "ReadCoilsRequest", "device": 1, "address": 1, "count": 0}),
            "invalid `count` field: must be at least 1",
        ),
        (
            json!({"operation": "WriteSingleCoilRequest", "device": 1, "address": 1, "value": 2}),
            "invalid `value` field: expected 0, 1, true or false, got 2",
        ),
        (
            json!({"operation": "FormatDiskRequest", "device": 1}),
            "unknown operation `FormatDiskRequest`",
        ),
    ] {
        let req = request(&r);
        assert_eq!(req.checked.as_ref().unwrap_err(), why, "{r}");
        let reply = Reply::NoResponse(why.to_string());
        let answer = response(&req, &reply);
        assert_eq!(answer["id"], "TestRequest");
        assert_eq!(answer["response"]["status"], "fail");
        assert_eq!(answer["response"]["error"], "No Response");
        assert_eq!(answer["response"]["error_message"], why);
        assert_eq!(answer["response"]["payload"]["error"], why);
        assert_eq!(answer["response"]["device"], r["device"]);
    }
    let not_json = parse(b"{oops");
    assert_eq!(not_json.checked.unwrap_err(), "the request is not JSON");
    let no_id = parse(
        br#"{"request": {"operation": "ReadCoilsRequest", "device": 1, "address": 1, "count": 1}}"#,
    );
    assert_eq!(no_id.checked.unwrap_err(), "the message has no `id` string");
}

#[test]
fn answers_and_exceptions_in_greengrass_s_shapes() {
    let req =
        request(&json!({"operation": "ReadCoilsRequest", "device": 1, "address": 1, "count": 1}));
    let ok = response(
        &req,
        &Reply::Answer(json!({"function_code": 1, "bits": [1]})),
    );
    assert_eq!(
        ok,
        json!({"response": {"status": "success", "device": 1, "operation": "ReadCoilsRequest",
            "payload": {"function_code": 1, "bits": [1]}}, "id": "TestRequest"})
    );
    let ex = response(&req, &Reply::Exception(ExceptionCode::IllegalDataAddress));
    assert_eq!(ex["response"]["status"], "fail");
    assert_eq!(ex["response"]["error"], "Exception");
    assert_eq!(
        ex["response"]["payload"],
        json!({"function_code": 129, "exception_code": 2})
    );
    assert_eq!(
        ex["response"]["error_message"],
        "Modbus exception 2: illegal data address"
    );
}

#[tokio::test]
async fn an_unreachable_device_is_no_response_and_the_next_request_tries_again() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut adapter = Adapter::new(
        Line::Tcp(format!("127.0.0.1:{port}")),
        Duration::from_millis(500),
    );
    let req =
        request(&json!({"operation": "ReadCoilsRequest", "device": 1, "address": 1, "count": 1}));
    for _ in 0..2 {
        match adapter.handle(&req).await {
            Reply::NoResponse(why) => {
                assert!(why.starts_with("cannot connect to 127.0.0.1"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }
}

//! `ModbusRTUProtocolAdapter`: Modbus requests that functions and devices
//! publish on `modbus/adapter/request` (routed to the connector's ARN),
//! sent to the device over the serial line (RTU, `ModbusSerialPort`) or
//! Modbus TCP (`ModbusTcpAddress`), and the device's answer published on
//! `modbus/adapter/response`, in the shapes of Greengrass's connector.
//! Every request gets an answer with its `id`: a malformed request, an
//! unreachable device, a timeout and a Modbus exception each as a `fail`
//! response saying which; the connector keeps serving.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::prelude::{ExceptionCode, Slave, SlaveContext};
use verdant_function_sdk::{Function, Outcome};

use crate::{Failure, number, parameter};

/// Where answers go.
pub const RESPONSE_TOPIC: &str = "modbus/adapter/response";

/// One request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    ReadCoils {
        address: u16,
        count: u16,
    },
    ReadDiscreteInputs {
        address: u16,
        count: u16,
    },
    ReadHoldingRegisters {
        address: u16,
        count: u16,
    },
    ReadInputRegisters {
        address: u16,
        count: u16,
    },
    WriteSingleCoil {
        address: u16,
        value: bool,
    },
    WriteSingleRegister {
        address: u16,
        value: u16,
    },
    WriteMultipleCoils {
        address: u16,
        values: Vec<bool>,
    },
    WriteMultipleRegisters {
        address: u16,
        values: Vec<u16>,
    },
    MaskWriteRegister {
        address: u16,
        and_mask: u16,
        or_mask: u16,
    },
    ReadWriteMultipleRegisters {
        read_address: u16,
        read_count: u16,
        write_address: u16,
        write_registers: Vec<u16>,
    },
}

impl Operation {
    /// The Modbus function code.
    pub fn function_code(&self) -> u8 {
        match self {
            Operation::ReadCoils { .. } => 1,
            Operation::ReadDiscreteInputs { .. } => 2,
            Operation::ReadHoldingRegisters { .. } => 3,
            Operation::ReadInputRegisters { .. } => 4,
            Operation::WriteSingleCoil { .. } => 5,
            Operation::WriteSingleRegister { .. } => 6,
            Operation::WriteMultipleCoils { .. } => 15,
            Operation::WriteMultipleRegisters { .. } => 16,
            Operation::MaskWriteRegister { .. } => 22,
            Operation::ReadWriteMultipleRegisters { .. } => 23,
        }
    }
}

/// A request as it came: what the answer echoes, and the operation or
/// why it is not one.
#[derive(Debug)]
pub struct Request {
    pub id: Value,
    pub device: Value,
    pub operation: Value,
    pub checked: Result<(u8, Operation), String>,
}

fn field<'a>(r: &'a Value, name: &str) -> Result<&'a Value, String> {
    r.get(name)
        .ok_or_else(|| format!("the request has no `{name}` field"))
}

fn integer(r: &Value, name: &str, max: u64) -> Result<u64, String> {
    let v = field(r, name)?;
    match v.as_u64() {
        Some(n) if n <= max => Ok(n),
        Some(n) => Err(format!("invalid `{name}` field: {n} is more than {max}")),
        None => Err(format!(
            "invalid `{name}` field: expected an integer 0..{max}, got {v}"
        )),
    }
}

fn word(r: &Value, name: &str) -> Result<u16, String> {
    integer(r, name, u64::from(u16::MAX)).map(|n| n as u16)
}

/// A count of 1..=`max` items.
fn count(r: &Value, name: &str, max: u16) -> Result<u16, String> {
    match word(r, name)? {
        0 => Err(format!("invalid `{name}` field: must be at least 1")),
        n if n > max => Err(format!("invalid `{name}` field: at most {max}")),
        n => Ok(n),
    }
}

fn bit(v: &Value, name: &str) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
        other => Err(format!(
            "invalid `{name}` field: expected 0, 1, true or false, got {other}"
        )),
    }
}

fn list<T>(
    r: &Value,
    name: &str,
    max: usize,
    each: impl Fn(&Value) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let Some(items) = field(r, name)?.as_array() else {
        return Err(format!("invalid `{name}` field: expected a list"));
    };
    if items.is_empty() || items.len() > max {
        return Err(format!("invalid `{name}` field: 1 to {max} values"));
    }
    items.iter().map(each).collect()
}

fn registers(r: &Value, name: &str, max: usize) -> Result<Vec<u16>, String> {
    list(r, name, max, |v| match v.as_u64().map(u16::try_from) {
        Some(Ok(n)) => Ok(n),
        _ => Err(format!(
            "invalid `{name}` field: {v} is not a register value 0..65535"
        )),
    })
}

/// The operation `r` (the `request` object) asks for.
fn operation(r: &Value) -> Result<Operation, String> {
    let name = field(r, "operation")?;
    let Some(name) = name.as_str() else {
        return Err(format!(
            "invalid `operation` field: expected a string, got {name}"
        ));
    };
    let address = || word(r, "address");
    // Greengrass's documentation names ReadInputRegisters' count `value`.
    let read = |max| {
        count(r, "count", max).or_else(|e| {
            if r.get("count").is_none() && r.get("value").is_some() {
                count(r, "value", max)
            } else {
                Err(e)
            }
        })
    };
    Ok(match name {
        "ReadCoilsRequest" => Operation::ReadCoils {
            address: address()?,
            count: read(2000)?,
        },
        "ReadDiscreteInputsRequest" => Operation::ReadDiscreteInputs {
            address: address()?,
            count: read(2000)?,
        },
        "ReadHoldingRegistersRequest" => Operation::ReadHoldingRegisters {
            address: address()?,
            count: read(125)?,
        },
        "ReadInputRegistersRequest" => Operation::ReadInputRegisters {
            address: address()?,
            count: read(125)?,
        },
        "WriteSingleCoilRequest" => Operation::WriteSingleCoil {
            address: address()?,
            value: bit(field(r, "value")?, "value")?,
        },
        "WriteSingleRegisterRequest" => Operation::WriteSingleRegister {
            address: address()?,
            value: word(r, "value")?,
        },
        "WriteMultipleCoilsRequest" => Operation::WriteMultipleCoils {
            address: address()?,
            values: list(r, "values", 1968, |v| bit(v, "values"))?,
        },
        "WriteMultipleRegistersRequest" => Operation::WriteMultipleRegisters {
            address: address()?,
            values: registers(r, "values", 123)?,
        },
        "MaskWriteRegisterRequest" => Operation::MaskWriteRegister {
            address: address()?,
            and_mask: word(r, "and_mask")?,
            or_mask: word(r, "or_mask")?,
        },
        "ReadWriteMultipleRegistersRequest" => Operation::ReadWriteMultipleRegisters {
            read_address: word(r, "read_address")?,
            read_count: count(r, "read_count", 125)?,
            write_address: word(r, "write_address")?,
            write_registers: registers(r, "write_registers", 121)?,
        },
        other => return Err(format!("unknown operation `{other}`")),
    })
}

/// Reads a request message.
pub fn parse(payload: &[u8]) -> Request {
    let Ok(message) = serde_json::from_slice::<Value>(payload) else {
        return Request {
            id: Value::Null,
            device: Value::Null,
            operation: Value::Null,
            checked: Err("the request is not JSON".into()),
        };
    };
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let Some(r) = message.get("request").filter(|r| r.is_object()) else {
        return Request {
            id,
            device: Value::Null,
            operation: Value::Null,
            checked: Err("the message has no `request` object".into()),
        };
    };
    let checked = (|| {
        let device = integer(r, "device", 247)? as u8;
        Ok((device, operation(r)?))
    })();
    let checked = match (&id, checked) {
        (Value::String(_), c) => c,
        (_, Err(e)) => Err(e),
        (_, Ok(_)) => Err("the message has no `id` string".into()),
    };
    Request {
        id,
        device: r.get("device").cloned().unwrap_or(Value::Null),
        operation: r.get("operation").cloned().unwrap_or(Value::Null),
        checked,
    }
}

/// How a request ended.
#[derive(Debug)]
pub enum Reply {
    /// The device's answer, as the response's payload.
    Answer(Value),
    /// A Modbus exception from the device.
    Exception(ExceptionCode),
    /// No answer: why (the request was not sent, or nothing came back).
    NoResponse(String),
}

fn exception_name(code: ExceptionCode) -> String {
    let name = match code {
        ExceptionCode::IllegalFunction => "illegal function",
        ExceptionCode::IllegalDataAddress => "illegal data address",
        ExceptionCode::IllegalDataValue => "illegal data value",
        ExceptionCode::ServerDeviceFailure => "server device failure",
        ExceptionCode::Acknowledge => "acknowledge",
        ExceptionCode::ServerDeviceBusy => "server device busy",
        ExceptionCode::MemoryParityError => "memory parity error",
        ExceptionCode::GatewayPathUnavailable => "gateway path unavailable",
        ExceptionCode::GatewayTargetDevice => "gateway target device failed to respond",
        ExceptionCode::Custom(_) => "exception",
    };
    format!("Modbus exception {}: {name}", u8::from(code))
}

/// The response message for `request` that ended as `outcome`.
pub fn response(request: &Request, outcome: &Reply) -> Value {
    let function_code = request
        .checked
        .as_ref()
        .map_or(0, |(_, op)| op.function_code());
    let body = match outcome {
        Reply::Answer(payload) => json!({
            "status": "success",
            "device": request.device,
            "operation": request.operation,
            "payload": payload,
        }),
        Reply::Exception(code) => json!({
            "status": "fail",
            "error": "Exception",
            "error_message": exception_name(*code),
            "device": request.device,
            "operation": request.operation,
            "payload": {
                "function_code": function_code + 128,
                "exception_code": u8::from(*code),
            },
        }),
        Reply::NoResponse(why) => json!({
            "status": "fail",
            "error": "No Response",
            "error_message": why,
            "device": request.device,
            "operation": request.operation,
            "payload": { "error": why },
        }),
    };
    json!({ "response": body, "id": request.id })
}

fn bits(v: &[bool]) -> Vec<u8> {
    v.iter().map(|b| u8::from(*b)).collect()
}

/// Sends `op` through `ctx`: the answer's payload or the exception;
/// `Err` when the transport failed.
async fn send(ctx: &mut Context, op: &Operation) -> Result<Result<Value, ExceptionCode>, String> {
    let fc = op.function_code();
    let r = match op {
        Operation::ReadCoils { address, count } => ctx
            .read_coils(*address, *count)
            .await
            .map(|r| r.map(|v| json!({ "function_code": fc, "bits": bits(&v) }))),
        Operation::ReadDiscreteInputs { address, count } => ctx
            .read_discrete_inputs(*address, *count)
            .await
            .map(|r| r.map(|v| json!({ "function_code": fc, "bits": bits(&v) }))),
        Operation::ReadHoldingRegisters { address, count } => ctx
            .read_holding_registers(*address, *count)
            .await
            .map(|r| r.map(|v| json!({ "function_code": fc, "registers": v }))),
        Operation::ReadInputRegisters { address, count } => ctx
            .read_input_registers(*address, *count)
            .await
            .map(|r| r.map(|v| json!({ "function_code": fc, "registers": v }))),
        Operation::WriteSingleCoil { address, value } => {
            ctx.write_single_coil(*address, *value).await.map(|r| {
                r.map(|()| json!({ "function_code": fc, "address": address, "value": value }))
            })
        }
        Operation::WriteSingleRegister { address, value } => {
            ctx.write_single_register(*address, *value).await.map(|r| {
                r.map(|()| json!({ "function_code": fc, "address": address, "value": value }))
            })
        }
        Operation::WriteMultipleCoils { address, values } => {
            ctx.write_multiple_coils(*address, values).await.map(|r| {
                r.map(
                    |()| json!({ "function_code": fc, "address": address, "count": values.len() }),
                )
            })
        }
        Operation::WriteMultipleRegisters { address, values } => ctx
            .write_multiple_registers(*address, values)
            .await
            .map(|r| {
                r.map(
                    |()| json!({ "function_code": fc, "address": address, "count": values.len() }),
                )
            }),
        Operation::MaskWriteRegister {
            address,
            and_mask,
            or_mask,
        } => ctx
            .masked_write_register(*address, *and_mask, *or_mask)
            .await
            .map(|r| {
                r.map(|()| {
                    json!({ "function_code": fc, "address": address,
                            "and_mask": and_mask, "or_mask": or_mask })
                })
            }),
        Operation::ReadWriteMultipleRegisters {
            read_address,
            read_count,
            write_address,
            write_registers,
        } => ctx
            .read_write_multiple_registers(
                *read_address,
                *read_count,
                *write_address,
                write_registers,
            )
            .await
            .map(|r| r.map(|v| json!({ "function_code": fc, "registers": v }))),
    };
    r.map_err(|e| e.to_string())
}

/// Where the devices are.
#[derive(Debug, Clone)]
pub enum Line {
    Tcp(String),
    Serial { path: String, baud: u32 },
}

impl Line {
    async fn open(&self) -> Result<Context, String> {
        match self {
            Line::Tcp(address) => {
                let addr: SocketAddr = tokio::net::lookup_host(address)
                    .await
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| format!("cannot resolve {address}"))?;
                tokio_modbus::client::tcp::connect_slave(addr, Slave(1))
                    .await
                    .map_err(|e| format!("cannot connect to {address}: {e}"))
            }
            Line::Serial { path, baud } => {
                use tokio_serial::SerialPortBuilderExt;
                let port = tokio_serial::new(path, *baud)
                    .data_bits(tokio_serial::DataBits::Eight)
                    .parity(tokio_serial::Parity::None)
                    .stop_bits(tokio_serial::StopBits::One)
                    .open_native_async()
                    .map_err(|e| format!("cannot open {path}: {e}"))?;
                Ok(tokio_modbus::client::rtu::attach_slave(port, Slave(1)))
            }
        }
    }
}

/// The connection to the devices, opened when needed and again after it
/// failed.
pub struct Adapter {
    line: Line,
    timeout: Duration,
    ctx: Option<Context>,
}

impl Adapter {
    pub fn new(line: Line, timeout: Duration) -> Adapter {
        Adapter {
            line,
            timeout,
            ctx: None,
        }
    }

    /// Answers one request.
    pub async fn handle(&mut self, request: &Request) -> Reply {
        let (device, op) = match &request.checked {
            Ok(c) => c,
            Err(why) => return Reply::NoResponse(why.clone()),
        };
        if self.ctx.is_none() {
            match tokio::time::timeout(self.timeout, self.line.open()).await {
                Ok(Ok(ctx)) => self.ctx = Some(ctx),
                Ok(Err(why)) => return Reply::NoResponse(why),
                Err(_) => {
                    return Reply::NoResponse(format!(
                        "cannot reach the Modbus line within {} ms",
                        self.timeout.as_millis()
                    ));
                }
            }
        }
        let ctx = self.ctx.as_mut().expect("opened above");
        ctx.set_slave(Slave(*device));
        match tokio::time::timeout(self.timeout, send(ctx, op)).await {
            Ok(Ok(Ok(payload))) => Reply::Answer(payload),
            Ok(Ok(Err(code))) => Reply::Exception(code),
            Ok(Err(why)) => {
                // The line may be broken: open it again next time.
                self.ctx = None;
                Reply::NoResponse(format!("[Input/Output] {why}"))
            }
            Err(_) => {
                // A late answer would be taken for the next request's.
                self.ctx = None;
                Reply::NoResponse(format!(
                    "[Input/Output] no response from device {device} within {} ms",
                    self.timeout.as_millis()
                ))
            }
        }
    }
}

pub fn main() -> Result<(), Failure> {
    let line = match std::env::var("ModbusTcpAddress") {
        Ok(address) if !address.is_empty() => Line::Tcp(address),
        _ => Line::Serial {
            path: parameter("ModbusSerialPort")?,
            baud: number("ModbusBaudRate")?,
        },
    };
    let timeout = Duration::from_millis(number("ModbusTimeoutMs")?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start its runtime: {e}")))?;
    let mut adapter = Adapter::new(line, timeout);
    let f = Function::from_env()?;
    f.run(|f, work| {
        let request = parse(&work.payload);
        let outcome = runtime.block_on(adapter.handle(&request));
        if let Reply::NoResponse(why) = &outcome {
            eprintln!("request {}: {why}", request.id);
        }
        // The answer goes by the publish; a refused one (the core's queue
        // full) is said here, and the connector serves on.
        if let Err(e) = f.publish(
            RESPONSE_TOPIC,
            response(&request, &outcome).to_string().as_bytes(),
        ) {
            eprintln!("request {}: cannot publish its answer: {e}", request.id);
        }
        Ok(Outcome::Result(Vec::new()))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests;

'use strict';
// Verdant's Node.js runtime loop for Greengrass v1 functions.
//
// Run as: node lambda_nodejs_runtime.js --handler=<module>.<function>, with
// the function's code as the working directory. Loads the handler's module
// (its top-level code runs now), tells the core it is initialized, then
// takes work items one at a time and calls handler(event, context,
// callback) (or awaits the promise it returns), posting the result or the
// handled error.

const path = require('path');
const IPCClient = require('aws-greengrass-ipc-sdk-js');
const { envVars } = require('aws-greengrass-common-js');

const arn = envVars.MY_FUNCTION_ARN;
const ipc = new IPCClient(envVars.AUTH_TOKEN);
const binary = process.env.ENCODING_TYPE === 'binary';
const timeoutMs = Number(process.env.VERDANT_FUNCTION_TIMEOUT || '3') * 1000;

const handlerArg = process.argv.slice(2).find((a) => a.startsWith('--handler='));
if (!handlerArg || !handlerArg.includes('.')) {
    process.stderr.write('lambda_nodejs_runtime: --handler=<module>.<function> is required\n');
    process.exit(2);
}
const spec = handlerArg.slice('--handler='.length);
const dot = spec.lastIndexOf('.');
const moduleName = spec.slice(0, dot);
const functionName = spec.slice(dot + 1);

function decodeClientContext(header) {
    if (!header) return {};
    try {
        return JSON.parse(Buffer.from(header, 'base64').toString());
    } catch (e) {
        return {};
    }
}

function context(work) {
    const parts = arn.split(':');
    const deadline = Date.now() + timeoutMs;
    const raw = decodeClientContext(work.clientContext);
    return {
        functionName: parts[6],
        functionVersion: parts[7] || '$LATEST',
        invokedFunctionArn: arn,
        memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
        awsRequestId: work.invocationId,
        logGroupName: `/aws/lambda/${parts[6]}`,
        logStreamName: 'verdant',
        identity: undefined,
        clientContext: { client: raw.client, custom: raw.custom || {}, env: raw.env },
        getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
        callbackWaitsForEmptyEventLoop: false,
    };
}

function encode(result) {
    if (binary) {
        if (result === undefined || result === null) return Buffer.alloc(0);
        return Buffer.isBuffer(result) ? result : Buffer.from(String(result));
    }
    return JSON.stringify(result === undefined ? null : result);
}

function loop(handler) {
    ipc.getWork(arn, (err, work) => {
        if (err) {
            process.stderr.write(`lambda_nodejs_runtime: cannot get work: ${err}\n`);
            setTimeout(() => loop(handler), 1000);
            return;
        }
        let done = false;
        const finish = (error, result) => {
            if (done) return;
            done = true;
            const next = (postErr) => {
                if (postErr) process.stderr.write(`lambda_nodejs_runtime: cannot post the result: ${postErr}\n`);
                setImmediate(() => loop(handler));
            };
            if (error) {
                const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
                process.stderr.write(`${error && error.stack ? error.stack : message}\n`);
                ipc.postHandlerErr(arn, work.invocationId, message, next);
            } else {
                ipc.postWorkResult(arn, work.invocationId, encode(result), next);
            }
        };
        let event;
        try {
            event = binary ? work.payload : (work.payload.length ? JSON.parse(work.payload.toString()) : null);
        } catch (e) {
            finish(e);
            return;
        }
        const ctx = context(work);
        ctx.succeed = (r) => finish(null, r);
        ctx.fail = (e) => finish(e || new Error('failed'));
        ctx.done = (e, r) => finish(e, r);
        try {
            const returned = handler(event, ctx, finish);
            if (returned && typeof returned.then === 'function') {
                returned.then((r) => finish(null, r), (e) => finish(e));
            }
        } catch (e) {
            finish(e);
        }
    });
}

let handler;
try {
    // eslint-disable-next-line import/no-dynamic-require, global-require
    const mod = require(path.resolve(process.cwd(), moduleName));
    handler = mod[functionName];
    if (typeof handler !== 'function') throw new Error(`${moduleName}.${functionName} is not a function`);
} catch (e) {
    process.stderr.write(`${e.stack || e}\n`);
    ipc.putInitialized(arn, false, `${e.name}(${JSON.stringify(e.message)})`, () => process.exit(1));
    return;
}
ipc.putInitialized(arn, true, '', (err) => {
    if (err) process.stderr.write(`lambda_nodejs_runtime: ${err}\n`);
    loop(handler);
});

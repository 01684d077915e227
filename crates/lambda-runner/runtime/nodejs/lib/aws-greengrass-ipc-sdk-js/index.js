'use strict';
// Verdant's aws-greengrass-ipc-sdk-js: HTTP IPC with the core, for
// aws-greengrass-core-sdk and for Verdant's runtime loop.

const http = require('http');
const { envVars } = require('aws-greengrass-common-js');

const agent = new http.Agent({ keepAlive: true });

class IPCClient {
    constructor(authToken, host = 'localhost', port = envVars.GG_DAEMON_PORT) {
        this.authToken = authToken || '';
        this.host = host;
        this.port = Number(port);
    }

    request(method, path, headers, body, cb) {
        const options = {
            host: this.host,
            port: this.port,
            method,
            path: `/2016-11-01/functions/${path}`,
            agent,
            headers: { Authorization: this.authToken, ...headers },
        };
        const req = http.request(options, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => {
                const data = Buffer.concat(chunks);
                if (res.statusCode >= 400) {
                    cb(new Error(`${res.statusCode} ${res.statusMessage}: ${data.toString()}`), res, data);
                } else {
                    cb(null, res, data);
                }
            });
        });
        req.on('error', (e) => cb(e));
        if (body !== undefined && body !== null) {
            req.write(Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)));
        }
        req.end();
    }

    postWork(functionArn, payload, clientContext, invocationType, cb) {
        this.request('POST', functionArn, {
            'X-Amz-Client-Context': clientContext || '',
            'X-Amz-Invocation-Type': invocationType || 'RequestResponse',
        }, payload === undefined ? '' : payload, (err, res) => {
            if (err) return cb(err);
            return cb(null, res.headers['x-amz-invocationid']);
        });
    }

    getWorkResult(functionArn, invocationId, cb) {
        this.request('GET', functionArn, { 'X-Amz-InvocationId': invocationId }, null, (err, res, body) => {
            if (err) return cb(err);
            return cb(null, body.toString(), res.headers['x-amz-function-error'], res.statusCode);
        });
    }

    getWork(functionArn, cb) {
        this.request('GET', `${functionArn}/work`, {}, null, (err, res, body) => {
            if (err) return cb(err);
            return cb(null, {
                invocationId: res.headers['x-amz-invocationid'],
                clientContext: res.headers['x-amz-client-context'],
                payload: body,
            });
        });
    }

    postWorkResult(functionArn, invocationId, result, cb) {
        this.request('POST', `${functionArn}/work`, { 'X-Amz-InvocationId': invocationId }, result, (err) => cb(err));
    }

    postHandlerErr(functionArn, invocationId, message, cb) {
        this.request('POST', `${functionArn}/work`, {
            'X-Amz-InvocationId': invocationId,
            'X-Amz-Function-Error': 'Handled',
        }, JSON.stringify({ errorMessage: message }), (err) => cb(err));
    }

    putInitialized(functionArn, success, response, cb) {
        this.request('PUT', `${functionArn}/initialized`, {},
            JSON.stringify({ Success: success, Response: response || '' }), (err) => cb(err));
    }
}

module.exports = IPCClient;

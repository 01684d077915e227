'use strict';
// Verdant's aws-greengrass-common-js: what aws-greengrass-core-sdk requires
// from the core.

const envVars = {
    AUTH_TOKEN: process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN,
    MY_FUNCTION_ARN: process.env.MY_FUNCTION_ARN,
    SHADOW_FUNCTION_ARN: process.env.SHADOW_FUNCTION_ARN,
    ROUTER_FUNCTION_ARN: process.env.ROUTER_FUNCTION_ARN,
    SECRETS_MANAGER_FUNCTION_ARN: process.env.SECRETS_MANAGER_FUNCTION_ARN,
    GG_DAEMON_PORT: process.env.GG_DAEMON_PORT || '8000',
};

// arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]
class FunctionArnFields {
    constructor(arn) {
        const parts = String(arn).split(':');
        if (parts.length < 7 || parts[0] !== 'arn' || parts[2] !== 'lambda' || parts[5] !== 'function') {
            throw new Error(`not a Lambda function ARN: ${arn}`);
        }
        this.region = parts[3];
        this.accountId = parts[4];
        this.name = parts[6];
        this.qualifier = parts.length > 7 ? parts[7] : undefined;
        this.unqualifiedArn = parts.slice(0, 7).join(':');
    }
}

function buildFunctionArn(unqualifiedArn, qualifier) {
    return qualifier ? `${unqualifiedArn}:${qualifier}` : unqualifiedArn;
}

// Log lines go to the function's stderr, which the core writes to its log.
class LocalWatchLogger {
    constructor() {
        for (const level of ['trace', 'debug', 'info', 'warn', 'error', 'fatal']) {
            this[level] = (message) => {
                if (level !== 'trace' && level !== 'debug') {
                    process.stderr.write(`[${level.toUpperCase()}] ${message}\n`);
                }
            };
        }
    }
}

module.exports = {
    envVars,
    FunctionArnFields,
    buildFunctionArn,
    logging: { LocalWatchLogger },
};

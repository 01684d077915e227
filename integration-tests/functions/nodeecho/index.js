// A Greengrass v1 Node.js function as users write them, with the real
// aws-greengrass-core-sdk: for each message, records it in device a's
// shadow, asks the (Python) adder function for a sum, and publishes what
// it saw to node/out.
const ggSdk = require('aws-greengrass-core-sdk');

const iotData = new ggSdk.IotData();
const lambda = new ggSdk.Lambda();

exports.handler = function handler(event, context, callback) {
    const subject = context.clientContext.custom.subject;
    const update = { state: { reported: { node: event } } };
    iotData.updateThingShadow({ thingName: 'a', payload: JSON.stringify(update) }, (err, shadow) => {
        if (err) return callback(err);
        const version = JSON.parse(shadow.Payload).version;
        return lambda.invoke({
            FunctionName: process.env.ADDER_ARN,
            Payload: JSON.stringify({ a: event.n, b: 1000 }),
        }, (invokeErr, answer) => {
            if (invokeErr) return callback(invokeErr);
            const out = {
                event,
                subject,
                shadow_version: version,
                sum: JSON.parse(answer.Payload).sum,
                uid: process.getuid(),
                function: context.invokedFunctionArn,
            };
            return iotData.publish({ topic: 'node/out', payload: JSON.stringify(out) }, (pubErr) => {
                callback(pubErr, { ok: true });
            });
        });
    });
};

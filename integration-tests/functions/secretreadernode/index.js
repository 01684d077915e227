// Reads the secret it is asked for with the real aws-greengrass-core-sdk's
// SecretsManager client, and returns what the SDK gave it, or the error.
const ggSdk = require('aws-greengrass-core-sdk');

const secrets = new ggSdk.SecretsManager();

exports.handler = function handler(event, context, callback) {
    const params = { SecretId: event.id };
    if (event.stage) params.VersionStage = event.stage;
    secrets.getSecretValue(params, (err, data) => {
        if (err) return callback(null, { error: err.message });
        const got = JSON.parse(data);
        return callback(null, {
            ARN: got.ARN,
            Name: got.Name,
            VersionStages: got.VersionStages,
            SecretString: got.SecretString,
            SecretBinary: got.SecretBinary,
            created: typeof got.CreatedDate,
        });
    });
};

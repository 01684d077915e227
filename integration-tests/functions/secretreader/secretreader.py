"""Reads the secret it is asked for with the real greengrasssdk's
secretsmanager client, and returns what the SDK gave it, or the error the
SDK raised."""
import greengrasssdk

secrets = greengrasssdk.client("secretsmanager")


def handler(event, context):
    kwargs = {"SecretId": event["id"]}
    if "stage" in event:
        kwargs["VersionStage"] = event["stage"]
    try:
        got = secrets.get_secret_value(**kwargs)
    except Exception as e:  # what a function would see
        return {"error": type(e).__name__, "message": str(e)}
    out = {k: got[k] for k in ("ARN", "Name", "VersionId", "VersionStages")}
    out["created_year"] = got["CreatedDate"].year
    for k in ("SecretString", "SecretBinary"):
        if k in got:
            out[k] = got[k]
    return out

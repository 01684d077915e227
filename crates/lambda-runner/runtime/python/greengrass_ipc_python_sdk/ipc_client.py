"""HTTP IPC with the core (Verdant): what greengrasssdk calls, and what the
runtime loop uses to take work and give results."""
import json
import urllib.error
import urllib.request

from greengrass_common.env_vars import AUTH_TOKEN, GG_DAEMON_PORT

HEADER_INVOCATION_ID = "X-Amz-InvocationId"
HEADER_CLIENT_CONTEXT = "X-Amz-Client-Context"
HEADER_AUTH_TOKEN = "Authorization"
HEADER_INVOCATION_TYPE = "X-Amz-Invocation-Type"
HEADER_FUNCTION_ERR_TYPE = "X-Amz-Function-Error"


class IPCException(Exception):
    pass


class WorkItem:
    def __init__(self, invocation_id, payload, client_context):
        self.invocation_id = invocation_id
        self.payload = payload
        self.client_context = client_context


class GetWorkResultOutput:
    def __init__(self, payload, func_err):
        self.payload = payload
        self.func_err = func_err


class IPCClient:
    def __init__(self, endpoint="localhost", port=None):
        self.endpoint = endpoint
        self.port = int(port or GG_DAEMON_PORT)

    def _url(self, function_arn, suffix=""):
        return "http://{}:{}/2016-11-01/functions/{}{}".format(
            self.endpoint, self.port, function_arn, suffix)

    def _request(self, url, method, body=None, headers=None):
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header(HEADER_AUTH_TOKEN, AUTH_TOKEN or "")
        for k, v in (headers or {}).items():
            request.add_header(k, v)
        try:
            return urllib.request.urlopen(request)
        except urllib.error.HTTPError as e:
            raise IPCException("{} {}: {}".format(e.code, e.reason, e.read().decode(errors="replace")))
        except OSError as e:
            raise IPCException(str(e))

    def post_work(self, function_arn, payload, client_context=None, invocation_type="RequestResponse"):
        if isinstance(payload, str):
            payload = payload.encode()
        response = self._request(self._url(function_arn), "POST", payload or b"", {
            HEADER_CLIENT_CONTEXT: client_context or "",
            HEADER_INVOCATION_TYPE: invocation_type,
        })
        return response.headers.get(HEADER_INVOCATION_ID)

    def get_work_result(self, function_arn, invocation_id):
        response = self._request(self._url(function_arn), "GET", None, {
            HEADER_INVOCATION_ID: invocation_id,
        })
        return GetWorkResultOutput(response.read(), response.headers.get(HEADER_FUNCTION_ERR_TYPE))

    def get_work(self, function_arn):
        response = self._request(self._url(function_arn, "/work"), "GET")
        return WorkItem(
            response.headers.get(HEADER_INVOCATION_ID),
            response.read(),
            response.headers.get(HEADER_CLIENT_CONTEXT),
        )

    def post_work_result(self, function_arn, work_item):
        payload = work_item.payload
        if isinstance(payload, str):
            payload = payload.encode()
        self._request(self._url(function_arn, "/work"), "POST", payload or b"", {
            HEADER_INVOCATION_ID: work_item.invocation_id,
        })

    def post_handler_err(self, function_arn, invocation_id, handler_err):
        body = json.dumps({"errorMessage": handler_err}).encode()
        self._request(self._url(function_arn, "/work"), "POST", body, {
            HEADER_INVOCATION_ID: invocation_id,
            HEADER_FUNCTION_ERR_TYPE: "Handled",
        })

    def put_initialization_result(self, function_arn, success, response=""):
        body = json.dumps({"Success": bool(success), "Response": response}).encode()
        self._request(self._url(function_arn, "/initialized"), "PUT", body)

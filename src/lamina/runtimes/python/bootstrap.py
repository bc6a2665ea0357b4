"""lamina's Python runtime: runs inside a function instance, loads the user's handler and talks to
the platform only through the Lambda Runtime API (plain HTTP/1.1, one keep-alive connection).

Launch: ``<python3.X> -I -S /abs/path/bootstrap.py [handler]``, cwd = $LAMBDA_TASK_ROOT. Standard
library only; runs unchanged on CPython 3.9 to 3.14. Environment, read once at start:
  AWS_LAMBDA_RUNTIME_API  host:port of the Runtime API
  _HANDLER                "module.function", split on the last "."; "/" in the module part means "."
                          ("pkg/mod.fn"); a command-line argument overrides it
  LAMBDA_TASK_ROOT        the function's code (default: the cwd)
  LAMINA_RUNTIME_PATH     os.pathsep-separated dirs of platform-provided packages (boto3,
                          botocore); removed from os.environ once read
  AWS_LAMBDA_FUNCTION_NAME/_VERSION/_MEMORY_SIZE, AWS_LAMBDA_LOG_GROUP_NAME/_LOG_STREAM_NAME
                          copied onto every context object (the memory size stays a str)
  AWS_LAMBDA_LOG_FORMAT   "JSON": one JSON object per log record; otherwise text lines
  AWS_LAMBDA_LOG_LEVEL    root logger level (TRACE means DEBUG); unset keeps Python's WARNING
  AWS_EXECUTION_ENV       AWS_Lambda_python3.12 and later: results use ensure_ascii=False
_X_AMZN_TRACE_ID is set (or removed) before every invocation.

sys.path (-I -S leave only the stdlib), in order: $LAMBDA_TASK_ROOT; the layer dirs
/opt/python/lib/pythonX.Y/site-packages and /opt/python (when present); each $LAMINA_RUNTIME_PATH
entry (so a package's own boto3 wins over the platform's); the stdlib.

Loop: GET /2018-06-01/runtime/invocation/next (blocks, no timeout), handler(event, context), then
POST .../invocation/{id}/response or .../{id}/error, after flushing stdout and stderr (the platform
collects the instance's output when the answer arrives). Init failures go to /runtime/init/error,
then the process exits with status 1. Error types, messages and log shapes follow awslambdaric.
`logging` costs ~5 ms to import, so it is not imported here: an import hook attaches the Lambda log
handler to the root logger as soon as anything imports `logging`, before user code can use it.
Importing this module only defines things (a zygote may import it and fork); main() runs it.
"""

import _socket  # `socket` itself costs ~4 ms to import (enum wrappers) and adds nothing needed here
import io
import json
import os
import sys
import time

_PREFIX = "/2018-06-01/runtime/"
_ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"
_THIS_FILE = __file__

_request_id = ""  # the current invocation's, for log records
_tenant_id = None
_log_json = False
_logging_ready = False
_stdio_ready = False
_encode = json.JSONEncoder().encode  # replaced by configure_runtime()


def setup_sys_path():
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    layer = "/opt/python/lib/python%d.%d/site-packages" % sys.version_info[:2]
    front = [task_root] + [p for p in (layer, "/opt/python") if os.path.isdir(p)]
    front += [p for p in os.environ.pop("LAMINA_RUNTIME_PATH", "").split(os.pathsep) if p]
    ours = os.path.dirname(_THIS_FILE)  # sys.path[0] when run as a script: not for user code
    path = []
    for entry in front + [p for p in sys.path if p != ours]:
        if entry not in path:
            path.append(entry)
    sys.path[:] = path


def setup_stdio():
    """Unbuffered UTF-8 streams on fds 1 and 2, whatever the locale, as `python -u` makes them
    (awslambdaric flushes after every write): a partial line written before a crash is kept.

    New stream objects rather than reconfigure(): an interpreter forked from a zygote inherits
    stream objects made for the zygote's fds, whose state (seekable, when that was a file) no
    longer holds for the pipe now on fds 1 and 2, and reconfigure() then fails on tell()."""
    for name, fd, errors in (("stdout", 1, "strict"), ("stderr", 2, "backslashreplace")):
        try:
            raw = io.FileIO(fd, "w", closefd=False)
        except (OSError, ValueError):
            continue  # no such fd: keep what the interpreter made
        stream = io.TextIOWrapper(raw, "utf-8", errors, line_buffering=True, write_through=True)
        setattr(sys, name, stream)
        setattr(sys, "__%s__" % name, stream)
    global _stdio_ready
    _stdio_ready = True  # a zygote does this once, for every instance it forks


def _flush_stdio():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            continue


def _warn(message):
    sys.stderr.write("lamina-bootstrap: %s\n" % message)


class RuntimeClient(object):
    """A tiny HTTP/1.1 client for the Runtime API over one persistent connection."""

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.address = (host.strip("[]") or "127.0.0.1", int(port))
        agent = "lamina-python/%d.%d.%d" % sys.version_info[:3]
        self._common = "Host: %s\r\nUser-Agent: %s\r\n" % (address, agent)
        self._next = ("GET %sinvocation/next HTTP/1.1\r\n%s\r\n" % (_PREFIX, self._common)).encode()
        self._sock = None
        self._buf = bytearray()

    def next_invocation(self):
        """Block until the next event; returns (status, headers with lower-case names, body)."""
        return self._exchange(self._next)

    def post(self, path, body, content_type="application/json", headers=""):
        head = "POST %s%s HTTP/1.1\r\n%sContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            _PREFIX, path, self._common, content_type, len(body), headers
        )  # fmt: skip
        return self._exchange(head.encode("utf-8") + body)

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        del self._buf[:]

    def _connect(self):
        host, port = self.address
        try:  # an IPv4 literal (the usual case) needs no resolver: getaddrinfo's first call in
            _socket.inet_aton(host)  # a fresh sandbox reads configuration files, ~3 ms
            targets = [(_socket.AF_INET, _socket.SOCK_STREAM, 0, "", (host, port))]
        except OSError:
            targets = _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM)
        for family, kind, proto, _, addr in targets:
            sock = _socket.socket(family, kind, proto)
            try:
                sock.settimeout(None)  # whatever default timeout user code may have set
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
                sock.connect(addr)
                self._sock = sock
                return
            except OSError as e:
                sock.close()
                error = e
        raise error

    def _exchange(self, data):
        """Send one request and read its response; on a dropped connection, reconnect once."""
        try:
            if self._sock is None:
                self._connect()
            self._sock.sendall(data)
            return self._read_response()
        except (OSError, ValueError):
            self.close()
        self._connect()
        try:
            self._sock.sendall(data)
            return self._read_response()
        except BaseException:
            self.close()
            raise

    def _read(self, n, separator=b""):
        """Take n bytes from the stream or, given a separator, the bytes before it."""
        buf = self._buf
        while True:
            end = buf.find(separator) if separator else n
            if 0 <= end <= len(buf):
                break
            data = self._sock.recv(min(max(n - len(buf), 65536), 1 << 20))
            if not data:
                raise ConnectionError("the Runtime API closed the connection")
            buf += data
        data = bytes(buf[:end])
        del buf[: end + len(separator)]
        return data

    def _read_response(self):
        head = self._read(0, b"\r\n\r\n")
        try:
            lines = head.decode("utf-8").split("\r\n")
        except UnicodeDecodeError:
            lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(None, 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self._read(0, b"\r\n").split(b";")[0], 16)
                if not size:
                    break
                parts.append(self._read(size + 2)[:-2])
            while self._read(0, b"\r\n"):  # trailers
                continue
            body = b"".join(parts)
        else:
            body = self._read(int(headers.get("content-length", 0)))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body


def _repr(obj, names):
    fields = ",".join("%s=%s" % (name, getattr(obj, name, None)) for name in names)
    return "%s([%s])" % (type(obj).__name__, fields)


class _Record(object):
    """Attributes filled from a JSON object (keys = slot names unless _keys says otherwise)."""

    __slots__ = ()
    _keys = ()

    def __init__(self, data):
        for name, key in zip(self.__slots__, self._keys or self.__slots__):  # noqa: B905
            setattr(self, name, data.get(key))

    def __repr__(self):
        return _repr(self, self.__slots__)


class CognitoIdentity(_Record):
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")
    _keys = ("cognitoIdentityId", "cognitoIdentityPoolId")


class Client(_Record):
    __slots__ = (
        "app_package_name", "app_title", "app_version_code", "app_version_name", "installation_id"
    )  # fmt: skip


class ClientContext(_Record):
    __slots__ = ("client", "custom", "env")


class _Fault(Exception):
    """A failure with a Lambda error type chosen by the runtime: (type, message[, trace])."""


def make_error(error_type, message, trace=None, request_id=""):
    return {
        "errorMessage": message or "",
        "errorType": error_type or "",
        "requestId": request_id or "",
        "stackTrace": trace or [],
    }


def _header_json(headers, name, what):
    value = headers.get(name)
    try:
        data = json.loads(value) if value else None
    except Exception as e:
        message = "Unable to parse %s JSON: %s" % (what, e)
        raise _Fault("Runtime.LambdaContextUnmarshalError", message) from None
    return data if isinstance(data, dict) else None


class LambdaContext(object):
    """The `context` argument of a handler, with the attributes of AWS's Python runtime."""

    _static = {}  # function_name etc., read from the environment once by configure_runtime()

    def __init__(self, request_id, headers):
        self.__dict__.update(self._static)
        self.aws_request_id = request_id
        self.invoked_function_arn = headers.get("lambda-runtime-invoked-function-arn")
        self.tenant_id = headers.get("lambda-runtime-aws-tenant-id")
        self._deadline_ms = int(headers.get("lambda-runtime-deadline-ms") or 0)
        self._w3c = {}
        self.client_context = None
        data = _header_json(headers, "lambda-runtime-client-context", "Client Context")
        if data is not None:
            w3c = data.pop("w3c", None)
            if isinstance(w3c, dict):
                keys = ("traceparent", "tracestate", "baggage")
                self._w3c = {k: w3c[k] for k in keys if isinstance(w3c.get(k), str)}
            self.client_context = ClientContext(data)
            client = data.get("client")
            self.client_context.client = Client(client) if isinstance(client, dict) else None
        data = _header_json(headers, "lambda-runtime-cognito-identity", "Cognito Identity")
        self.identity = CognitoIdentity(data or {})

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def w3c(self):
        """W3C trace context (traceparent, tracestate, baggage) passed in the client context."""
        return dict(self._w3c)

    def log(self, message):
        sys.stdout.write(str(message))

    def __repr__(self):
        names = ("aws_request_id", "log_group_name", "log_stream_name", "function_name")
        names += ("memory_limit_in_mb", "function_version", "invoked_function_arn")
        return _repr(self, (*names, "client_context", "identity", "tenant_id"))


def _add_request_id(record):
    record.aws_request_id = _request_id
    record.tenant_id = _tenant_id
    return True


def _json_formatter(logging):
    reserved = set(vars(logging.makeLogRecord({})))
    reserved.update(("message", "asctime", "aws_request_id", "tenant_id"))
    encode = json.JSONEncoder(ensure_ascii=False, default=str).encode

    class JsonFormatter(logging.Formatter):
        def format(self, record):
            msg, exc = record.msg, record.exc_info
            out = {
                "timestamp": self.formatTime(record, "%Y-%m-%dT%H:%M:%SZ"),
                "level": logging.getLevelName(min(50, max(0, record.levelno)) // 10 * 10),
                "message": msg if isinstance(msg, dict) and not record.args else None,
                "logger": record.name,
                "requestId": getattr(record, "aws_request_id", None),
                "tenantId": getattr(record, "tenant_id", None),
            }
            if out["message"] is None:
                out["message"] = record.getMessage()
            if exc and exc[0] is not None:
                import traceback

                out["errorType"], out["errorMessage"] = exc[0].__name__, str(exc[1])
                out["stackTrace"] = traceback.format_tb(exc[2])
                out["location"] = "%s:%s:%s" % (record.pathname, record.funcName, record.lineno)
            for key, value in vars(record).items():
                if key not in reserved and key not in out:
                    out[key] = value
            return encode({k: v for k, v in out.items() if v is not None}) + "\n"

    return JsonFormatter()


def setup_logging(logging):
    """Attach the Lambda log handler (it writes to sys.stdout) to the root logger, once."""
    global _logging_ready
    if _logging_ready:
        return
    _logging_ready = True
    logging.Formatter.converter = time.gmtime  # Lambda log timestamps are UTC

    class LambdaLoggerHandler(logging.Handler):
        def emit(self, record):
            try:
                sys.stdout.write(self.format(record))
            except Exception:
                self.handleError(record)

    handler = LambdaLoggerHandler()
    if _log_json:
        handler.setFormatter(_json_formatter(logging))
    else:
        text = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n"
        handler.setFormatter(logging.Formatter(text, "%Y-%m-%dT%H:%M:%S"))
    handler.addFilter(_add_request_id)
    root = logging.getLogger()
    root.addHandler(handler)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper().replace("TRACE", "DEBUG")
    if level and isinstance(logging.getLevelName(level), int):
        root.setLevel(level)


class _LoggingImportHook(object):
    """sys.meta_path finder: when `logging` is first imported, run setup_logging() on it."""

    def find_spec(self, name, path=None, target=None):
        if name != "logging":
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        else:
            return None
        loader = spec.loader
        if loader is None or isinstance(loader, type):  # frozen or builtin: leave it alone
            return spec
        execute = loader.exec_module

        def exec_module(module):
            del loader.exec_module  # back to the loader's own method
            execute(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            if hasattr(module, "Handler"):  # not some local file named logging.py
                setup_logging(module)

        loader.exec_module = exec_module
        return spec


def _exception_error(exc, request_id):
    """The error payload of a user exception, without this file's (and importlib's) frames."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    while frames and (
        frames[0].filename == _THIS_FILE or frames[0].filename.startswith("<frozen importlib")
    ):
        del frames[0]
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable %s object>" % type(exc).__name__
    return make_error(type(exc).__name__, message, traceback.format_list(frames), request_id)


def log_error(error):
    """Log an error as awslambdaric does: one line whose parts are joined by carriage returns,
    traceback lines indented with no-break spaces (or one JSON object)."""
    if _log_json:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = _encode(dict({"timestamp": stamp, "level": "ERROR"}, **error))
        return sys.stdout.write(line + "\n")
    head = "[ERROR]"
    if error["errorType"]:
        head += " " + error["errorType"] + (":" if error["errorMessage"] else "")
    if error["errorMessage"]:
        head += " " + error["errorMessage"]
    parts = [head, "Traceback (most recent call last):"]
    for entry in error["stackTrace"]:
        for line in entry.splitlines() or [""]:
            stripped = line.lstrip(" ")
            parts.append("\u00a0" * (len(line) - len(stripped)) + stripped)
    return sys.stdout.write("\r".join(parts) + "\n")


def _encode_error(error):
    return _encode(error).encode("utf-8", "backslashreplace")


def _json_default(obj):
    decimal = sys.modules.get("decimal")  # a Decimal can only exist once decimal is imported
    if decimal is not None and isinstance(obj, decimal.Decimal):
        if obj.is_finite() and obj == obj.to_integral_value():
            return int(obj)
        return float(obj)
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


def configure_runtime():
    """Read the environment once: context fields, log format, JSON flavour, logging hook."""
    global _log_json, _encode
    env = os.environ
    names = ("function_name", "function_version", "log_group_name", "log_stream_name")
    static = {name: env.get("AWS_LAMBDA_" + name.upper()) for name in names}
    static["memory_limit_in_mb"] = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    LambdaContext._static = static
    _log_json = env.get("AWS_LAMBDA_LOG_FORMAT", "").upper() == "JSON"
    minor = env.get("AWS_EXECUTION_ENV", "").partition("AWS_Lambda_python3.")[2]
    unicode_ok = minor.isdigit() and int(minor) >= 12
    _encode = json.JSONEncoder(ensure_ascii=not unicode_ok, default=_json_default).encode
    if "logging" in sys.modules:
        setup_logging(sys.modules["logging"])
    elif not any(isinstance(finder, _LoggingImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _LoggingImportHook())


def load_handler(handler_string):
    """Import the handler's module and return the handler; raises _Fault or the module's error."""
    try:
        module_name, function_name = handler_string.rsplit(".", 1)
    except ValueError as e:
        message = "Bad handler '%s': %s" % (handler_string, e)
        raise _Fault("Runtime.MalformedHandlerName", message) from None
    dotted = module_name.replace("/", ".")
    if dotted.split(".")[0] in sys.builtin_module_names:
        message = "Cannot use built-in module %s as a handler module" % module_name
        raise _Fault("Runtime.BuiltInModuleConflict", message)
    try:
        __import__(dotted)
        module = sys.modules[dotted]
    except ImportError as e:
        message = "Unable to import module '%s': %s" % (module_name, e)
        raise _Fault("Runtime.ImportModuleError", message) from None
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        message = "Syntax error in module '%s': %s" % (module_name, e)
        raise _Fault("Runtime.UserCodeSyntaxError", message, trace) from None
    try:
        return getattr(module, function_name)
    except AttributeError:
        message = "Handler '%s' missing on module '%s'" % (function_name, module_name)
        raise _Fault("Runtime.HandlerNotFound", message) from None


def report_init_error(client, error):
    """Log an init failure, POST it to /runtime/init/error and exit with status 1."""
    log_error(error)
    _flush_stdio()
    header = "%s: %s\r\n" % (_ERROR_TYPE, error["errorType"] or "Runtime.Unknown")
    try:
        client.post("init/error", _encode_error(error), "application/json", header)
    except (OSError, ValueError) as e:
        _warn("could not report the init error: %s" % e)
    sys.exit(1)


def handle_invocation(handler, request_id, headers, body):
    """Run one invocation; returns (kind, payload, content type), kind "response" or "error"."""
    try:
        context = LambdaContext(request_id, headers)
        content_type = headers.get("content-type")
        if content_type is None or content_type.partition(";")[0].strip() == "application/json":
            try:
                event = json.loads(body)
            except Exception as e:
                message = "Unable to unmarshal input: %s" % e
                raise _Fault("Runtime.UnmarshalError", message) from None
        else:
            event = body
        result = handler(event, context)
        if isinstance(result, (bytes, bytearray)):
            return "response", bytes(result), "application/unknown"
        try:
            return "response", _encode(result).encode("utf-8"), "application/json"
        except Exception as e:
            message = "Unable to marshal response: %s" % e
            raise _Fault("Runtime.MarshalError", message) from None
    except _Fault as f:
        error = make_error(*f.args, request_id=request_id)
    except Exception as e:
        error = _exception_error(e, request_id)
    log_error(error)
    return "error", _encode_error(error), "application/json"


def post_result(client, request_id, kind, payload, content_type):
    """POST a response or an error; an HTTP error answer is reported, never retried in a loop."""
    path = "invocation/%s/%s" % (request_id, kind)
    try:
        status, _, answer = client.post(path, payload, content_type)
        if status == 413 and kind == "response":  # the platform probably failed it already
            message = "Response payload size exceeded the maximum allowed payload size."
            error = make_error("Function.ResponseSizeTooLarge", message, None, request_id)
            header = "%s: Function.ResponseSizeTooLarge\r\n" % _ERROR_TYPE
            path = "invocation/%s/error" % request_id
            client.post(path, _encode_error(error), "application/json", header)
        elif status >= 300:
            _warn("POST %s answered %d: %r" % (path, status, answer[:300]))
    except (OSError, ValueError) as e:
        _warn("POST %s failed: %s" % (path, e))


def run_loop(handler, client):
    """Serve invocations until the Runtime API goes away (then exit with status 1)."""
    global _request_id, _tenant_id
    environ = os.environ
    while True:
        try:
            status, headers, body = client.next_invocation()
            if status != 200:
                raise ValueError("answered %d: %r" % (status, body[:300]))
        except (OSError, ValueError) as e:
            _warn("GET next failed: %s" % e)
            sys.exit(1)
        request_id = headers.get("lambda-runtime-aws-request-id", "")
        _request_id = request_id
        _tenant_id = headers.get("lambda-runtime-aws-tenant-id")
        trace_id = headers.get("lambda-runtime-trace-id")
        if trace_id:
            environ["_X_AMZN_TRACE_ID"] = trace_id
        elif "_X_AMZN_TRACE_ID" in environ:
            del environ["_X_AMZN_TRACE_ID"]
        kind, payload, content_type = handle_invocation(handler, request_id, headers, body)
        _flush_stdio()
        post_result(client, request_id, kind, payload, content_type)


def main():
    if not _stdio_ready:
        setup_stdio()
    setup_sys_path()
    configure_runtime()
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        _warn("AWS_LAMBDA_RUNTIME_API is not set")
        sys.exit(1)
    client = RuntimeClient(address)
    handler_string = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("_HANDLER", "")
    try:
        handler = load_handler(handler_string)
    except _Fault as f:
        report_init_error(client, make_error(*f.args))
    except Exception as e:
        report_init_error(client, _exception_error(e, ""))
    if "logging" in sys.modules:  # imported in a way the import hook could not patch
        setup_logging(sys.modules["logging"])
    run_loop(handler, client)


if __name__ == "__main__":
    main()

// Verdant's Java runtime loop for Greengrass v1 functions written to the
// AWS Lambda convention (RequestHandler<I, O> or RequestStreamHandler).
//
// Run as: java -cp <the function's classes and jars> VerdantJavaRuntime.java
//   --handler=<package.Class>[::<method>]
// (the JDK's single-file source launcher). Loads the handler class, tells
// the core it is initialized, then takes work items one at a time over the
// core's HTTP IPC, calls the handler and posts the result or the handled
// error. The Context and its ClientContext and LambdaLogger are made with
// java.lang.reflect.Proxy for whatever interfaces the handler declares, so
// nothing here depends on aws-lambda-java-core.

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.Proxy;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

public final class VerdantJavaRuntime {
    private static final String ARN = System.getenv("MY_FUNCTION_ARN");
    private static final String TOKEN = env("AWS_CONTAINER_AUTHORIZATION_TOKEN", "");
    private static final String PORT = env("GG_DAEMON_PORT", "8000");
    private static final boolean BINARY = "binary".equals(System.getenv("ENCODING_TYPE"));
    private static final long TIMEOUT_MS = Long.parseLong(env("VERDANT_FUNCTION_TIMEOUT", "3")) * 1000;
    private static final HttpClient HTTP = HttpClient.newHttpClient();

    private static String env(String name, String fallback) {
        String v = System.getenv(name);
        return v == null ? fallback : v;
    }

    private static HttpRequest.Builder request(String suffix) {
        return HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + PORT + "/2016-11-01/functions/" + ARN + suffix))
                .header("Authorization", TOKEN);
    }

    private static HttpResponse<byte[]> send(HttpRequest r) throws Exception {
        HttpResponse<byte[]> response = HTTP.send(r, HttpResponse.BodyHandlers.ofByteArray());
        if (response.statusCode() >= 400) {
            throw new IllegalStateException("IPC " + response.statusCode() + ": "
                    + new String(response.body(), StandardCharsets.UTF_8));
        }
        return response;
    }

    public static void main(String[] args) throws Exception {
        String spec = null;
        for (String a : args) {
            if (a.startsWith("--handler=")) {
                spec = a.substring("--handler=".length());
            }
        }
        if (spec == null) {
            System.err.println("VerdantJavaRuntime: --handler=<package.Class>[::<method>] is required");
            System.exit(2);
        }
        String className = spec.contains("::") ? spec.substring(0, spec.indexOf("::")) : spec;
        String methodName = spec.contains("::") ? spec.substring(spec.indexOf("::") + 2) : "handleRequest";
        Object handler;
        Method method;
        try {
            Class<?> type = Class.forName(className, true, Thread.currentThread().getContextClassLoader());
            handler = type.getDeclaredConstructor().newInstance();
            method = find(type, methodName);
        } catch (Throwable e) {
            e.printStackTrace();
            initialized(false, e.getClass().getSimpleName() + "(\"" + e.getMessage() + "\")");
            System.exit(1);
            return;
        }
        initialized(true, "");
        while (true) {
            HttpResponse<byte[]> work = send(request("/work").GET().build());
            String id = work.headers().firstValue("X-Amz-InvocationId").orElse("");
            String clientContext = work.headers().firstValue("X-Amz-Client-Context").orElse("");
            HttpRequest.Builder result = request("/work").header("X-Amz-InvocationId", id);
            byte[] body;
            try {
                body = invoke(handler, method, work.body(), context(method, id, clientContext));
            } catch (Throwable e) {
                Throwable cause = e instanceof InvocationTargetException && e.getCause() != null ? e.getCause() : e;
                cause.printStackTrace();
                String message = cause.getClass().getSimpleName() + ": " + cause.getMessage();
                result.header("X-Amz-Function-Error", "Handled");
                body = ("{\"errorMessage\":" + Json.write(message) + "}").getBytes(StandardCharsets.UTF_8);
            }
            send(result.POST(HttpRequest.BodyPublishers.ofByteArray(body)).build());
        }
    }

    private static void initialized(boolean success, String response) throws Exception {
        String body = "{\"Success\":" + success + ",\"Response\":" + Json.write(response) + "}";
        send(request("/initialized").PUT(HttpRequest.BodyPublishers.ofString(body)).build());
    }

    // The handler method: public, not a bridge, with the most specific input.
    private static Method find(Class<?> type, String name) throws NoSuchMethodException {
        Method best = null;
        for (Method m : type.getMethods()) {
            if (!m.getName().equals(name) || m.isBridge() || !Modifier.isPublic(m.getModifiers())) {
                continue;
            }
            int n = m.getParameterCount();
            if (n < 1 || n > 3) {
                continue;
            }
            if (best == null || best.getParameterTypes()[0] == Object.class) {
                best = m;
            }
        }
        if (best == null) {
            throw new NoSuchMethodException(type.getName() + "::" + name);
        }
        return best;
    }

    private static Object context(Method method, String id, String clientContext) {
        Class<?>[] types = method.getParameterTypes();
        Class<?> contextType = types[types.length - 1];
        if (!contextType.isInterface() || types.length < 2) {
            return null;
        }
        Map<String, Object> raw = new LinkedHashMap<>();
        if (!clientContext.isEmpty()) {
            try {
                Object parsed = Json.read(new String(Base64.getDecoder().decode(clientContext), StandardCharsets.UTF_8));
                if (parsed instanceof Map) {
                    raw.putAll(cast(parsed));
                }
            } catch (RuntimeException e) {
                // An unreadable client context is an empty one.
            }
        }
        long deadline = System.currentTimeMillis() + TIMEOUT_MS;
        String[] parts = ARN.split(":");
        return Proxy.newProxyInstance(contextType.getClassLoader(), new Class<?>[] {contextType}, (proxy, m, a) -> {
            switch (m.getName()) {
                case "getAwsRequestId": return id;
                case "getFunctionName": return parts.length > 6 ? parts[6] : ARN;
                case "getFunctionVersion": return parts.length > 7 ? parts[7] : "$LATEST";
                case "getInvokedFunctionArn": return ARN;
                case "getLogGroupName": return "/aws/lambda/" + (parts.length > 6 ? parts[6] : ARN);
                case "getLogStreamName": return "verdant";
                case "getRemainingTimeInMillis": return (int) Math.max(0, deadline - System.currentTimeMillis());
                case "getMemoryLimitInMB": return Integer.parseInt(env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "16"));
                case "getIdentity": return null;
                case "getClientContext": return clientContext(m.getReturnType(), raw);
                case "getLogger": return logger(m.getReturnType());
                case "toString": return "Context(" + id + ")";
                case "hashCode": return System.identityHashCode(proxy);
                case "equals": return proxy == a[0];
                default: return null;
            }
        });
    }

    private static Object clientContext(Class<?> type, Map<String, Object> raw) {
        if (!type.isInterface()) {
            return null;
        }
        return Proxy.newProxyInstance(type.getClassLoader(), new Class<?>[] {type}, (proxy, m, a) -> {
            switch (m.getName()) {
                case "getCustom": return strings(raw.get("custom"));
                case "getEnvironment": return strings(raw.get("env"));
                case "getClient": return null;
                case "toString": return "ClientContext" + raw;
                case "hashCode": return System.identityHashCode(proxy);
                case "equals": return proxy == a[0];
                default: return null;
            }
        });
    }

    private static Object logger(Class<?> type) {
        if (!type.isInterface()) {
            return null;
        }
        return Proxy.newProxyInstance(type.getClassLoader(), new Class<?>[] {type}, (proxy, m, a) -> {
            if (m.getName().equals("log") && a != null && a.length > 0) {
                Object line = a[0] instanceof byte[] ? new String((byte[]) a[0], StandardCharsets.UTF_8) : a[0];
                System.err.println(line);
                return null;
            }
            switch (m.getName()) {
                case "toString": return "LambdaLogger";
                case "hashCode": return System.identityHashCode(proxy);
                case "equals": return proxy == a[0];
                default: return null;
            }
        });
    }

    private static Map<String, String> strings(Object value) {
        Map<String, String> out = new LinkedHashMap<>();
        if (value instanceof Map) {
            for (Map.Entry<String, Object> e : VerdantJavaRuntime.<Map<String, Object>>cast(value).entrySet()) {
                out.put(e.getKey(), e.getValue() instanceof String ? (String) e.getValue() : Json.write(e.getValue()));
            }
        }
        return out;
    }

    @SuppressWarnings("unchecked")
    private static <T> T cast(Object o) {
        return (T) o;
    }

    private static byte[] invoke(Object handler, Method method, byte[] payload, Object context) throws Exception {
        Class<?>[] types = method.getParameterTypes();
        if (types.length >= 2 && InputStream.class.isAssignableFrom(types[0]) && OutputStream.class.isAssignableFrom(types[1])) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            Object[] args = types.length == 3
                    ? new Object[] {new ByteArrayInputStream(payload), out, context}
                    : new Object[] {new ByteArrayInputStream(payload), out};
            method.invoke(handler, args);
            return out.toByteArray();
        }
        Object input;
        String text = new String(payload, StandardCharsets.UTF_8);
        if (types[0] == byte[].class) {
            input = payload;
        } else if (types[0] == String.class) {
            Object parsed = BINARY || text.isBlank() ? text : Json.readOr(text, text);
            input = parsed instanceof String ? parsed : text;
        } else if (InputStream.class.isAssignableFrom(types[0])) {
            input = new ByteArrayInputStream(payload);
        } else {
            input = Pojo.to(text.isBlank() ? null : Json.read(text), method.getGenericParameterTypes()[0]);
        }
        Object result = types.length >= 2 ? method.invoke(handler, input, context) : method.invoke(handler, input);
        if (result instanceof byte[]) {
            return (byte[]) result;
        }
        if (BINARY && result instanceof String) {
            return ((String) result).getBytes(StandardCharsets.UTF_8);
        }
        return Json.write(Pojo.from(result)).getBytes(StandardCharsets.UTF_8);
    }

    /// JSON values (Map, List, String, Long, Double, Boolean, null) to the
    /// handler's declared input type, and plain Java objects back: fields
    /// by name through setters or public fields, getters or public fields
    /// out, as the AWS Lambda Java runtime maps POJOs.
    static final class Pojo {
        static Object to(Object value, java.lang.reflect.Type type) throws Exception {
            Class<?> raw = type instanceof Class ? (Class<?>) type
                    : type instanceof java.lang.reflect.ParameterizedType
                            ? (Class<?>) ((java.lang.reflect.ParameterizedType) type).getRawType() : Object.class;
            if (value == null) {
                return raw == boolean.class ? Boolean.FALSE : raw.isPrimitive() ? to(0L, raw) : null;
            }
            if (raw == Object.class || raw.isInstance(value)) {
                return value;
            }
            if (value instanceof Number) {
                Number n = (Number) value;
                if (raw == int.class || raw == Integer.class) return n.intValue();
                if (raw == long.class || raw == Long.class) return n.longValue();
                if (raw == double.class || raw == Double.class) return n.doubleValue();
                if (raw == float.class || raw == Float.class) return n.floatValue();
                if (raw == short.class || raw == Short.class) return n.shortValue();
                if (raw == byte.class || raw == Byte.class) return n.byteValue();
                if (raw == String.class) return n.toString();
            }
            if (value instanceof Boolean && (raw == boolean.class || raw == Boolean.class)) {
                return value;
            }
            if (raw == String.class) {
                return value instanceof String ? value : Json.write(value);
            }
            if (value instanceof List && List.class.isAssignableFrom(raw)) {
                java.lang.reflect.Type item = type instanceof java.lang.reflect.ParameterizedType
                        ? ((java.lang.reflect.ParameterizedType) type).getActualTypeArguments()[0] : Object.class;
                List<Object> out = new ArrayList<>();
                for (Object o : (List<?>) value) {
                    out.add(to(o, item));
                }
                return out;
            }
            if (value instanceof Map) {
                Object o = raw.getDeclaredConstructor().newInstance();
                for (Map.Entry<?, ?> e : ((Map<?, ?>) value).entrySet()) {
                    set(o, String.valueOf(e.getKey()), e.getValue());
                }
                return o;
            }
            throw new IllegalArgumentException("cannot make a " + raw.getName() + " of " + Json.write(value));
        }

        private static void set(Object o, String name, Object value) throws Exception {
            String setter = "set" + Character.toUpperCase(name.charAt(0)) + name.substring(1);
            for (Method m : o.getClass().getMethods()) {
                if (m.getName().equals(setter) && m.getParameterCount() == 1) {
                    m.invoke(o, to(value, m.getGenericParameterTypes()[0]));
                    return;
                }
            }
            try {
                java.lang.reflect.Field f = o.getClass().getField(name);
                f.set(o, to(value, f.getGenericType()));
            } catch (NoSuchFieldException e) {
                // Unknown properties are ignored, as the AWS runtime does.
            }
        }

        /// A plain object as JSON values (Map of its properties).
        static Object from(Object o) throws Exception {
            if (o == null || o instanceof String || o instanceof Number || o instanceof Boolean) {
                return o;
            }
            if (o instanceof Map) {
                Map<String, Object> out = new LinkedHashMap<>();
                for (Map.Entry<?, ?> e : ((Map<?, ?>) o).entrySet()) {
                    out.put(String.valueOf(e.getKey()), from(e.getValue()));
                }
                return out;
            }
            if (o instanceof Iterable) {
                List<Object> out = new ArrayList<>();
                for (Object x : (Iterable<?>) o) {
                    out.add(from(x));
                }
                return out;
            }
            if (o instanceof Enum || o instanceof Character) {
                return o.toString();
            }
            Map<String, Object> out = new LinkedHashMap<>();
            for (Method m : o.getClass().getMethods()) {
                String n = m.getName();
                if (m.getParameterCount() != 0 || m.getDeclaringClass() == Object.class) {
                    continue;
                }
                String property = n.startsWith("get") && n.length() > 3 ? n.substring(3)
                        : n.startsWith("is") && n.length() > 2 && m.getReturnType() == boolean.class ? n.substring(2) : null;
                if (property != null) {
                    out.put(Character.toLowerCase(property.charAt(0)) + property.substring(1), from(m.invoke(o)));
                }
            }
            for (java.lang.reflect.Field f : o.getClass().getFields()) {
                if (!Modifier.isStatic(f.getModifiers())) {
                    out.putIfAbsent(f.getName(), from(f.get(o)));
                }
            }
            return out;
        }
    }

    /// JSON to and from Map, List, String, Long, Double, Boolean and null.
    static final class Json {
        private final String s;
        private int i;

        private Json(String s) {
            this.s = s;
        }

        static Object read(String text) {
            Json j = new Json(text);
            Object v = j.value();
            j.space();
            if (j.i != j.s.length()) {
                throw new IllegalArgumentException("JSON: trailing text at " + j.i);
            }
            return v;
        }

        static Object readOr(String text, Object fallback) {
            try {
                return read(text);
            } catch (RuntimeException e) {
                return fallback;
            }
        }

        private void space() {
            while (i < s.length() && Character.isWhitespace(s.charAt(i))) {
                i++;
            }
        }

        private Object value() {
            space();
            if (i >= s.length()) {
                throw new IllegalArgumentException("JSON: unexpected end");
            }
            char c = s.charAt(i);
            if (c == '{') {
                Map<String, Object> m = new LinkedHashMap<>();
                i++;
                space();
                if (s.charAt(i) == '}') {
                    i++;
                    return m;
                }
                while (true) {
                    space();
                    String k = string();
                    space();
                    expect(':');
                    m.put(k, value());
                    space();
                    if (s.charAt(i) == ',') {
                        i++;
                        continue;
                    }
                    expect('}');
                    return m;
                }
            }
            if (c == '[') {
                List<Object> l = new ArrayList<>();
                i++;
                space();
                if (s.charAt(i) == ']') {
                    i++;
                    return l;
                }
                while (true) {
                    l.add(value());
                    space();
                    if (s.charAt(i) == ',') {
                        i++;
                        continue;
                    }
                    expect(']');
                    return l;
                }
            }
            if (c == '"') {
                return string();
            }
            if (s.startsWith("true", i)) {
                i += 4;
                return Boolean.TRUE;
            }
            if (s.startsWith("false", i)) {
                i += 5;
                return Boolean.FALSE;
            }
            if (s.startsWith("null", i)) {
                i += 4;
                return null;
            }
            int start = i;
            while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) {
                i++;
            }
            String n = s.substring(start, i);
            if (n.isEmpty()) {
                throw new IllegalArgumentException("JSON: unexpected '" + c + "' at " + start);
            }
            if (n.contains(".") || n.contains("e") || n.contains("E")) {
                return Double.parseDouble(n);
            }
            return Long.parseLong(n);
        }

        private void expect(char c) {
            if (i >= s.length() || s.charAt(i) != c) {
                throw new IllegalArgumentException("JSON: expected '" + c + "' at " + i);
            }
            i++;
        }

        private String string() {
            expect('"');
            StringBuilder b = new StringBuilder();
            while (true) {
                char c = s.charAt(i++);
                if (c == '"') {
                    return b.toString();
                }
                if (c != '\\') {
                    b.append(c);
                    continue;
                }
                char e = s.charAt(i++);
                switch (e) {
                    case 'n': b.append('\n'); break;
                    case 't': b.append('\t'); break;
                    case 'r': b.append('\r'); break;
                    case 'b': b.append('\b'); break;
                    case 'f': b.append('\f'); break;
                    case 'u': b.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; break;
                    default: b.append(e);
                }
            }
        }

        static String write(Object v) {
            if (v == null) {
                return "null";
            }
            if (v instanceof String) {
                StringBuilder b = new StringBuilder("\"");
                for (char c : ((String) v).toCharArray()) {
                    switch (c) {
                        case '"': b.append("\\\""); break;
                        case '\\': b.append("\\\\"); break;
                        case '\n': b.append("\\n"); break;
                        case '\r': b.append("\\r"); break;
                        case '\t': b.append("\\t"); break;
                        default:
                            if (c < 0x20) {
                                b.append(String.format("\\u%04x", (int) c));
                            } else {
                                b.append(c);
                            }
                    }
                }
                return b.append('"').toString();
            }
            if (v instanceof Number || v instanceof Boolean) {
                return v.toString();
            }
            if (v instanceof Map) {
                StringBuilder b = new StringBuilder("{");
                for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                    if (b.length() > 1) {
                        b.append(',');
                    }
                    b.append(write(String.valueOf(e.getKey()))).append(':').append(write(e.getValue()));
                }
                return b.append('}').toString();
            }
            if (v instanceof Iterable) {
                StringBuilder b = new StringBuilder("[");
                for (Object o : (Iterable<?>) v) {
                    if (b.length() > 1) {
                        b.append(',');
                    }
                    b.append(write(o));
                }
                return b.append(']').toString();
            }
            return write(v.toString());
        }
    }
}

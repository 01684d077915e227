// A Java function to the AWS Lambda convention: adds a and b, and says
// what it was told about its invocation.
package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.LinkedHashMap;
import java.util.Map;

public class Sum implements RequestHandler<Map<String, Object>, Map<String, Object>> {
    @Override
    public Map<String, Object> handleRequest(Map<String, Object> input, Context context) {
        if (input.containsKey("fail")) {
            throw new IllegalArgumentException("asked to fail");
        }
        context.getLogger().log("adding " + input);
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("sum", ((Number) input.get("a")).longValue() + ((Number) input.get("b")).longValue());
        out.put("subject", context.getClientContext().getCustom().get("subject"));
        out.put("function", context.getInvokedFunctionArn());
        out.put("user", System.getProperty("user.name"));
        return out;
    }
}

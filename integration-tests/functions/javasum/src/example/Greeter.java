// A Java function with plain-object input and output, as the AWS Lambda
// Java runtime maps them from and to JSON.
package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.ArrayList;
import java.util.List;

public class Greeter implements RequestHandler<Greeter.Greeting, Greeter.Reply> {
    public static class Greeting {
        private String name;
        private int times;

        public void setName(String name) {
            this.name = name;
        }

        public void setTimes(int times) {
            this.times = times;
        }
    }

    public static class Reply {
        private final List<String> lines = new ArrayList<>();
        public boolean shouted;

        public List<String> getLines() {
            return lines;
        }
    }

    @Override
    public Reply handleRequest(Greeting input, Context context) {
        Reply r = new Reply();
        for (int i = 0; i < input.times; i++) {
            r.lines.add("hello " + input.name);
        }
        r.shouted = input.times > 2;
        return r;
    }
}

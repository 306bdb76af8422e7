# Self-test of the test harness (t/FokoChat.pm): stock nginx directives only.

use t::FokoChat;

repeat_each(2);

plan tests => repeat_each() * (blocks() * 2 + 12);

no_shuffle();
run_tests();

__DATA__

=== TEST 1: return a body
--- config
    location = /t {
        return 200 "hi\n";
    }
--- request
GET /t
--- response_body
hi
--- no_error_log
[error]



=== TEST 2: response headers, present and absent
--- config
    location = /t {
        add_header X-Foo bar;
        return 200 "ok\n";
    }
--- request
GET /t
--- response_headers
X-Foo: bar
Content-Type: text/plain
!X-Missing
--- response_body
ok



=== TEST 3: error code, response_headers_like
--- config
    location = /t {
        return 404;
    }
--- request
GET /t
--- error_code: 404
--- response_headers_like
Content-Length: \d+
--- response_body_like: 404 Not Found



=== TEST 4: nginx must die on an unknown directive
--- config
    location = /t {
        foko_no_such_directive on;
    }
--- must_die
--- error_log
[emerg]
unknown directive "foko_no_such_directive"



=== TEST 5: error log, with a regex and a substring
--- config
    location /t {
        root /nonexistent;
    }
--- request
GET /t/x.html
--- error_code: 404
--- error_log eval
[qr{open\(\) "/nonexistent/t/x\.html" failed}, "No such file or directory"]
--- no_error_log
[alert]
[crit]



=== TEST 6: several requests, one connection each
--- config
    location /t/ {
        return 200 "$uri\n";
    }
--- request eval
["GET /t/a", "GET /t/b"]
--- error_code eval
[200, 200]
--- response_body eval
["/t/a\n", "/t/b\n"]



=== TEST 7: request body, more_headers
--- config
    location = /t {
        return 200 "$request_method $content_length $http_x_foo\n";
    }
--- request
POST /t
hello
--- more_headers
X-Foo: foo bar
--- response_body
POST 5 foo bar



=== TEST 8: main_config, http_config and $TEST_NGINX_* variables
--- main_config
worker_rlimit_nofile 1024;
--- http_config
    map $uri $foko_mapped {
        default "mapped";
    }
--- config
    location = /t {
        return 200 "$foko_mapped $server_port $TEST_NGINX_SERVER_PORT\n";
    }
--- request
GET /t
--- response_body
mapped $TEST_NGINX_SERVER_PORT $TEST_NGINX_SERVER_PORT



=== TEST 9: response_body_unlike and the default location
--- config
--- request
GET /
--- response_body_unlike: ^hi$



=== TEST 10: chunked response from user_files and ssi
--- config
    location = /c.html {
        ssi on;
        root html;
    }
--- user_files
>>> c.html
uri=<!--# echo var="uri" -->
--- request
GET /c.html
--- response_headers
Transfer-Encoding: chunked
--- response_body
uri=/c.html



=== TEST 11: raw HTTP/1.0 request read until close, with wait
--- config
    location = /t {
        return 200 "raw\n";
    }
--- raw_request eval
"GET /t HTTP/1.0\r\nHost: localhost\r\n\r\n"
--- wait: 0.1
--- response_body
raw
--- timeout: 2



=== TEST 12: skip_nginx
--- skip_nginx: 2: < 999.0.0
--- config
--- request
GET /
--- response_body
never checked

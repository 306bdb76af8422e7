# Serving the web client with conf/client.conf, the rules conf/dev.conf
# includes: files of a build (a throwaway frontend/dist), client routes
# answered with index.html, cache headers, gzip (the client's files and the
# module's JSON), a 503 page that says how to build when there is no build,
# and WebSocket upgrades from the page's own origin on any port (as through
# the TCP relay of the end-to-end tests).

use t::FokoChat;

use Cwd qw(getcwd);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use FokoChat::Ws qw(own_mongo_uri);

my $dist = tempdir('foko-dist-XXXXXX', TMPDIR => 1, CLEANUP => 1);
make_path("$dist/assets");

sub put {
    my ($name, $content) = @_;
    open my $fh, '>', "$dist/$name" or die "$dist/$name: $!\n";
    print {$fh} $content;
    close $fh;
}

put('index.html', <<'_HTML_');
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Foko chat</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="description" content="Foko chat: channels, direct conversations">
<link rel="stylesheet" href="/assets/x-abc123.css">
<script type="module" src="/assets/x-abc123.js"></script></head>
<body><div id="root"></div></body></html>
_HTML_
put('assets/x-abc123.js',
    join '', map { "export const line$_ = 'the client, line $_';\n" } 1 .. 40);
put('assets/x-abc123.css',
    join '', map { ".c$_ { color: #$_$_$_; margin: ${_}px; }\n" } 1 .. 40);
put('assets/logo-abc123.svg', '<svg xmlns="http://www.w3.org/2000/svg">'
    . join('', map { "<circle cx=\"$_\" cy=\"$_\" r=\"$_\"/>" } 1 .. 40)
    . "</svg>\n");
put('manifest.json', '{"name":"Foko chat","icons":['
    . join(',', map { "{\"src\":\"/icon-$_.png\",\"sizes\":\"${_}x$_\"}" }
           1 .. 20) . "]}\n");

# a database of its own: nothing for the workers to warm up from, so that
# they stop at once whatever the suite stored before
$ENV{TEST_NGINX_CLIENT_MONGO_URI} = own_mongo_uri('client60');

$ENV{TEST_NGINX_CLIENT_DIST} = $dist;
$ENV{TEST_NGINX_CLIENT_MISSING} = "$dist/no-such-build";
$ENV{TEST_NGINX_CLIENT_CONF} = getcwd() . '/conf/client.conf';
-f $ENV{TEST_NGINX_CLIENT_CONF} or die "run from the repository root\n";

our $Index = do { local $/; open my $fh, '<', "$dist/index.html"; <$fh> };

no_root_location();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: / is index.html, checked again on every load
--- http_config
    include /etc/nginx/mime.types;
--- config
    root $TEST_NGINX_CLIENT_DIST;
    include $TEST_NGINX_CLIENT_CONF;
--- request
GET /
--- error_code: 200
--- response_headers
Cache-Control: no-cache
Content-Type: text/html
--- response_body eval
$::Index
--- no_error_log
[error]



=== TEST 2: client routes are index.html too
--- http_config
    include /etc/nginx/mime.types;
--- config
    root $TEST_NGINX_CLIENT_DIST;
    include $TEST_NGINX_CLIENT_CONF;
--- request eval
["GET /c/0123456789abcdef01234567", "GET /signin",
 "GET /reset-password?token=a.b.c", "GET /invite?token=a.b.c",
 "GET /index.html"]
--- error_code eval
[200, 200, 200, 200, 200]
--- response_headers eval
["Cache-Control: no-cache", "Cache-Control: no-cache",
 "Cache-Control: no-cache", "Cache-Control: no-cache",
 "Cache-Control: no-cache"]
--- response_body eval
[$::Index, $::Index, $::Index, $::Index, $::Index]
--- no_error_log
[error]



=== TEST 3: a hashed asset is cached for a year
--- http_config
    include /etc/nginx/mime.types;
--- config
    root $TEST_NGINX_CLIENT_DIST;
    include $TEST_NGINX_CLIENT_CONF;
--- request
GET /assets/x-abc123.js
--- error_code: 200
--- response_headers
Cache-Control: public, max-age=31536000, immutable
Content-Type: application/javascript
!Content-Encoding
--- response_body_like: ^export const line1 = 'the client, line 1';
--- no_error_log
[error]



=== TEST 4: a missing asset is a 404 that is not kept, never index.html
--- http_config
    include /etc/nginx/mime.types;
--- config
    root $TEST_NGINX_CLIENT_DIST;
    include $TEST_NGINX_CLIENT_CONF;
--- request
GET /assets/x-000000.js
--- error_code: 404
--- response_headers
!Cache-Control
--- response_body_unlike: id="root"
--- no_error_log
[error]



=== TEST 5: js, css, svg, json and html are compressed for a client that takes gzip
--- http_config
    include /etc/nginx/mime.types;
--- config
    root $TEST_NGINX_CLIENT_DIST;
    include $TEST_NGINX_CLIENT_CONF;
--- request eval
["GET /assets/x-abc123.js", "GET /assets/x-abc123.css",
 "GET /assets/logo-abc123.svg", "GET /manifest.json", "GET /c/abc"]
--- more_headers
Accept-Encoding: gzip
--- error_code eval
[200, 200, 200, 200, 200]
--- response_headers eval
["Content-Encoding: gzip\nVary: Accept-Encoding",
 "Content-Encoding: gzip\nVary: Accept-Encoding",
 "Content-Encoding: gzip\nVary: Accept-Encoding",
 "Content-Encoding: gzip\nVary: Accept-Encoding",
 "Content-Encoding: gzip\nVary: Accept-Encoding"]
--- no_error_log
[error]



=== TEST 6: the module's JSON is compressed too
--- http_config
    include /etc/nginx/mime.types;
    foko_chat_mongo_uri $TEST_NGINX_CLIENT_MONGO_URI;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
--- config
    root $TEST_NGINX_CLIENT_DIST;
    include $TEST_NGINX_CLIENT_CONF;

    location = /status {
        foko_chat_status;
    }
--- request
GET /status
--- more_headers
Accept-Encoding: gzip
--- error_code: 200
--- response_headers
Content-Encoding: gzip
Content-Type: application/json; charset=utf-8
--- no_error_log
[error]



=== TEST 7: without a build, / says how to make one (503, not 500)
--- http_config
    include /etc/nginx/mime.types;
    foko_chat_mongo_uri $TEST_NGINX_CLIENT_MONGO_URI;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
--- config
    root $TEST_NGINX_CLIENT_MISSING;
    include $TEST_NGINX_CLIENT_CONF;

    location /api/ {
        foko_chat_api;
    }
--- request eval
["GET /", "GET /c/0123456789abcdef01234567",
 "GET /reset-password?token=a.b.c", "GET /index.html", "GET /api/health"]
--- error_code eval
[503, 503, 503, 503, 200]
--- response_headers eval
["Content-Type: text/html\nCache-Control: no-store",
 "Content-Type: text/html\nCache-Control: no-store",
 "Content-Type: text/html\nCache-Control: no-store",
 "Content-Type: text/html\nCache-Control: no-store",
 "Content-Type: application/json; charset=utf-8"]
--- response_body_like eval
["make run.*npm ci &amp;&amp; npm run build.*frontend/",
 "The web client is not built", "The web client is not built",
 "The web client is not built", '^\{"status":"ok"']
--- no_error_log
[error]
[alert]
rewrite or internal redirection cycle



=== TEST 8: the page's own origin upgrades on another port, as through a relay
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_CLIENT_MONGO_URI;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
    foko_chat_websocket_auth_timeout 200ms;
--- config
    root $TEST_NGINX_CLIENT_DIST;
    include $TEST_NGINX_CLIENT_CONF;

    location = /ws {
        foko_chat_websocket;
    }
--- raw_request eval
"GET /ws HTTP/1.1\r
Host: 127.0.0.1:45123\r
Origin: http://127.0.0.1:45123\r
Upgrade: websocket\r
Connection: Upgrade\r
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
Sec-WebSocket-Version: 13\r
\r
"
--- error_code: 101
--- response_headers
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
--- no_error_log
[error]



=== TEST 9: a page of another origin may not
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_CLIENT_MONGO_URI;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
--- config
    root $TEST_NGINX_CLIENT_DIST;
    include $TEST_NGINX_CLIENT_CONF;

    location = /ws {
        foko_chat_websocket;
    }
--- raw_request eval
"GET /ws HTTP/1.1\r
Host: 127.0.0.1:45123\r
Origin: http://127.0.0.1:8080\r
Upgrade: websocket\r
Connection: Upgrade\r
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
Sec-WebSocket-Version: 13\r
\r
"
--- error_code: 403
--- no_error_log
[error]

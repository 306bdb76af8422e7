# GET /api/health, the status page, and the API's 404/405 shapes.

use t::FokoChat;

plan tests => repeat_each() * (blocks() * 3 + 3);

no_shuffle();
run_tests();

__DATA__

=== TEST 1: health answers ok while MongoDB is up
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
--- config
    location /api/ {
        foko_chat_api;
    }
--- request
GET /api/health
--- error_code: 200
--- response_body
{"status":"ok","mongo":"up"}
--- no_error_log
[error]



=== TEST 2: an unknown API path is a 404 in the error shape
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
--- config
    location /api/ {
        foko_chat_api;
    }
--- request
GET /api/nope
--- error_code: 404
--- response_body
{"error":{"code":"not_found","message":"no such API endpoint"}}
--- no_error_log
[error]



=== TEST 3: a known path with the wrong method is a 405 with Allow
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
--- config
    location /api/ {
        foko_chat_api;
    }
--- request
DELETE /api/health
--- error_code: 405
--- response_headers
Allow: GET, HEAD
Content-Type: application/json; charset=utf-8
--- response_body
{"error":{"code":"method_not_allowed","message":"method not allowed here"}}
--- no_error_log
[error]



=== TEST 4: the route is matched below the location's prefix
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
--- config
    location /chat/api/ {
        foko_chat_api;
    }
--- request
GET /chat/api/health
--- error_code: 200
--- response_body
{"status":"ok","mongo":"up"}
--- no_error_log
[error]



=== TEST 5: a trailing slash or a longer path is not the route
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
--- config
    location /api/ {
        foko_chat_api;
    }
--- request
GET /api/health/x
--- error_code: 404
--- response_body_like: "code":"not_found"
--- no_error_log
[error]



=== TEST 6: status reports the process, zone and MongoDB state
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_shm_size 4m;
--- config
    location = /status {
        foko_chat_status;
    }
--- request
GET /status
--- error_code: 200
--- response_body_like: ^\{"pid":\d+,"connections":\{"active":\d+,"reading":\d+,"writing":\d+,"waiting":\d+\},"zone":\{"size":4194304,"used":\d+,"free":\d+,"created":\d+,"reloads":0\},"mongo":\{"state":"(unknown|up)","checked":\d+\},"tasks":\{"thread_pool":"default","in_flight":\d+\},"websocket":\{"connections":0,"events":\d+,"event_log":\d+,"signing_in":0,"waiting_to_sign_in":0,"signin_limit":64,"signins_from_zone":0,"signins_from_mongodb":0\},"accounts":\{"from_zone":0,"from_mongodb":0\},"channel_lists":\{"from_zone":0,"from_mongodb":0\},"posts":\{"queued":0,"channel_loads":\d+,"waited_for_load":\d+\}\}$
--- no_error_log
[error]



=== TEST 7: status refuses other methods in the error shape
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
--- config
    location = /status {
        foko_chat_status;
    }
--- request
POST /status
--- error_code: 405
--- response_headers
Allow: GET, HEAD
--- response_body_like: "code":"method_not_allowed"
--- no_error_log
[error]



=== TEST 8: health on a named thread pool
--- main_config
    thread_pool chat threads=4;
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_thread_pool chat;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
--- config
    location /api/ {
        foko_chat_api;
    }
--- request
GET /api/health
--- error_code: 200
--- response_body
{"status":"ok","mongo":"up"}
--- no_error_log
[error]

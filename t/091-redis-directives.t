# nginx -t refuses every bad foko_chat_redis_* setting, naming it; a
# good one starts, and without foko_chat_redis_url the status has no
# "redis" section (the rest of the suite runs without Redis).

use t::FokoChat;

plan tests => repeat_each() * (blocks() * 3);

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a Redis URL of another scheme
--- main_config
thread_pool foko_redis threads=2;
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_redis_url http://127.0.0.1:6379;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
invalid Redis URL "http://127.0.0.1:6379" in "foko_chat_redis_url"



=== TEST 2: a host name, which the workers would have to resolve
--- main_config
thread_pool foko_redis threads=2;
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_redis_url redis://redis.example:6379;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
invalid Redis URL "redis://redis.example:6379" in "foko_chat_redis_url"



=== TEST 3: a port out of range
--- main_config
thread_pool foko_redis threads=2;
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_redis_url redis://127.0.0.1:70000;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
invalid Redis URL "redis://127.0.0.1:70000" in "foko_chat_redis_url"



=== TEST 4: a database that is not a number
--- main_config
thread_pool foko_redis threads=2;
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_redis_url redis://127.0.0.1:6379/x;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
invalid Redis URL "redis://127.0.0.1:6379/x" in "foko_chat_redis_url"



=== TEST 5: an IPv6 address without its brackets closed
--- main_config
thread_pool foko_redis threads=2;
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_redis_url redis://[::1:6379;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
invalid Redis URL "redis://[::1:6379" in "foko_chat_redis_url"



=== TEST 6: a Redis URL given twice
--- main_config
thread_pool foko_redis threads=2;
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_redis_url redis://127.0.0.1:6379;
    foko_chat_redis_url redis://127.0.0.1:6380;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
"foko_chat_redis_url" directive is duplicate



=== TEST 7: a host id with a space
--- main_config
thread_pool foko_redis threads=2;
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_redis_url redis://127.0.0.1:6379;
    foko_chat_host_id "host a";
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
invalid host id "host a" in "foko_chat_host_id"



=== TEST 8: a host id too long
--- main_config
thread_pool foko_redis threads=2;
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_redis_url redis://127.0.0.1:6379;
    foko_chat_host_id hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
invalid host id "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh" in "foko_chat_host_id"



=== TEST 9: no partitions
--- main_config
thread_pool foko_redis threads=2;
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_redis_url redis://127.0.0.1:6379;
    foko_chat_redis_partitions 0;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
invalid value "0" in "foko_chat_redis_partitions": it must be a number from 1 to 1024



=== TEST 10: too many partitions
--- main_config
thread_pool foko_redis threads=2;
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_redis_url redis://127.0.0.1:6379;
    foko_chat_redis_partitions 2000;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
invalid value "2000" in "foko_chat_redis_partitions": it must be a number from 1 to 1024



=== TEST 11: streams too short
--- main_config
thread_pool foko_redis threads=2;
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_redis_url redis://127.0.0.1:6379;
    foko_chat_redis_stream_length 10;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
invalid value "10" in "foko_chat_redis_stream_length": it must be a number from 100 to 100000000



=== TEST 12: a stream length that is not a number
--- main_config
thread_pool foko_redis threads=2;
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_redis_url redis://127.0.0.1:6379;
    foko_chat_redis_stream_length lots;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
invalid value "lots" in "foko_chat_redis_stream_length"



=== TEST 13: a Redis thread pool nobody declared
--- main_config
thread_pool foko_redis threads=2;
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_redis_url redis://127.0.0.1:6379;
    foko_chat_redis_thread_pool nope;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
unknown thread pool "nope" in "foko_chat_redis_thread_pool"



=== TEST 14: the default Redis thread pool, not declared
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_redis_url redis://127.0.0.1:6379;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
"foko_chat_redis_url" needs the thread pool "foko_redis": declare it with "thread_pool foko_redis threads=2;" before the http block



=== TEST 15: every directive, well formed: nginx starts, with a "redis" section
--- main_config
thread_pool redis_pool threads=2;
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_redis_url redis://[::1]:1/3;
    foko_chat_host_id web-1.example;
    foko_chat_redis_partitions 8;
    foko_chat_redis_stream_length 1000;
    foko_chat_redis_thread_pool redis_pool;
--- config
    location = /status {
        foko_chat_status;
    }
--- request
GET /status
--- response_body_like: "redis":\{[^}]*"host_id":"web-1\.example"
--- no_error_log
[error]



=== TEST 16: without a Redis URL, no "redis" section
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_redis_partitions 8;
--- config
    location = /status {
        foko_chat_status;
    }
--- request
GET /status
--- response_body_unlike: "redis"
--- no_error_log
[error]

# nginx -t refuses every bad or missing setting, naming the directive.

use t::FokoChat;

plan tests => repeat_each() * (blocks() * 3);

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a MongoDB URI that does not parse
--- http_config
    foko_chat_mongo_uri http://127.0.0.1:27017/;
--- config
    location /api/ {
        foko_chat_api;
    }
--- must_die
--- error_log
[emerg]
invalid MongoDB URI "http://127.0.0.1:27017/" in "foko_chat_mongo_uri"



=== TEST 2: no MongoDB URI at all
--- http_config
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
"foko_chat_mongo_uri" is not set



=== TEST 3: a zone size that is not a size
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_shm_size lots;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
"foko_chat_shm_size" directive invalid value



=== TEST 4: a zone too small to hold anything
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_shm_size 64k;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
"foko_chat_shm_size" directive must be at least 1m



=== TEST 5: a thread pool nobody declared
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_thread_pool nope;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
unknown thread pool "nope" in "foko_chat_thread_pool"



=== TEST 6: a directive given twice
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
"foko_chat_mongo_uri" directive is duplicate



=== TEST 7: the API in a regex location
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
--- config
    location ~ ^/api/ {
        foko_chat_api;
    }
--- must_die
--- error_log
[emerg]
"foko_chat_api" directive needs a prefix location



=== TEST 8: the API without a signing key
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
--- config
    location /api/ {
        foko_chat_api;
    }
--- must_die
--- error_log
[emerg]
"foko_chat_jwt_secret" or "foko_chat_jwt_key_file" is required



=== TEST 9: an HS256 secret shorter than 32 bytes
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_jwt_secret short-secret;
--- config
    location /api/ {
        foko_chat_api;
    }
--- must_die
--- error_log
[emerg]
"foko_chat_jwt_secret" must be at least 32 bytes long



=== TEST 10: a secret and a key file contradict each other
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
    foko_chat_jwt_key_file /nonexistent.pem;
--- config
    location /api/ {
        foko_chat_api;
    }
--- must_die
--- error_log
[emerg]
"foko_chat_jwt_key_file" directive is duplicate or conflicts with "foko_chat_jwt_secret"



=== TEST 11: a key file that cannot be read
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_jwt_key_file /nonexistent/key.pem;
--- config
    location /api/ {
        foko_chat_api;
    }
--- must_die
--- error_log
[emerg]
"foko_chat_jwt_key_file": cannot open "/nonexistent/key.pem"



=== TEST 12: a token lifetime that is not a time
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
    foko_chat_jwt_ttl forever;
--- config
    location /api/ {
        foko_chat_api;
    }
--- must_die
--- error_log
[emerg]
invalid value "forever" in "foko_chat_jwt_ttl"



=== TEST 13: an unknown password hash algorithm
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
    foko_chat_password_hash md5;
--- config
    location /api/ {
        foko_chat_api;
    }
--- must_die
--- error_log
[emerg]
unsupported algorithm "md5" in "foko_chat_password_hash"



=== TEST 14: a password hash cost out of range
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
    foko_chat_password_hash argon2id t=0;
--- config
    location /api/ {
        foko_chat_api;
    }
--- must_die
--- error_log
[emerg]
invalid parameter "t=0" in "foko_chat_password_hash"



=== TEST 15: an unknown hash thread pool
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
    foko_chat_hash_thread_pool hashing;
--- config
    location /api/ {
        foko_chat_api;
    }
--- must_die
--- error_log
[emerg]
unknown thread pool "hashing" in "foko_chat_hash_thread_pool"



=== TEST 16: an unknown mail transport
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_mail carrier-pigeon from=chat@example.org;
    foko_chat_public_url https://chat.example.org;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
invalid mail transport "carrier-pigeon" in "foko_chat_mail"



=== TEST 17: mail without a sender
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_mail smtp://127.0.0.1:25 timeout=5s;
    foko_chat_public_url https://chat.example.org;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
"foko_chat_mail smtp://127.0.0.1:25" needs "from=<address>"



=== TEST 18: a SendGrid key file that does not exist
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_mail sendgrid key_file=/nonexistent/sendgrid.key from=chat@example.org;
    foko_chat_public_url https://chat.example.org;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
cannot open key_file "/nonexistent/sendgrid.key" of "foko_chat_mail"



=== TEST 19: mail without a public URL for its links
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_mail smtp://127.0.0.1:25 from=chat@example.org;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
"foko_chat_mail" needs "foko_chat_public_url"



=== TEST 20: a public URL that is not http(s)
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_public_url ftp://chat.example.org;
--- config
    location = /status {
        foko_chat_status;
    }
--- must_die
--- error_log
[emerg]
invalid URL "ftp://chat.example.org" in "foko_chat_public_url"



=== TEST 21: argon2 memory below 8k per lane
--- http_config
    foko_chat_mongo_uri $TEST_NGINX_MONGO_URI;
    foko_chat_jwt_secret test-secret-0123456789abcdefghijklmnop;
    foko_chat_password_hash argon2id m=8k p=2;
--- config
    location /api/ {
        foko_chat_api;
    }
--- must_die
--- error_log
[emerg]
"foko_chat_password_hash": m= must be at least p= times 8k

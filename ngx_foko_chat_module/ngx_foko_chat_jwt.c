
/*
 * Foko chat: JSON Web Tokens, through libjwt.
 *
 * libjwt 1.10 leaves two checks to its caller: jwt_decode() accepts an
 * unsigned token when no key is given and reports whatever algorithm the
 * header names, and it never looks at "exp".  So every token is decoded
 * with the configured key, its algorithm must be the configured one (this
 * also stops HS256 tokens "signed" with an RS256 public key), and "exp" and
 * the token's kind are checked here.
 */


#include <openssl/opensslv.h>
#if (OPENSSL_VERSION_NUMBER >= 0x30000000L)
#include <openssl/core_names.h>
#endif
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>

#include "ngx_foko_chat_jwt.h"


static ngx_foko_chat_jwt_conf_t *ngx_foko_chat_jwt_conf(ngx_conf_t *cf,
    ngx_foko_chat_main_conf_t *fmcf);
static ngx_int_t ngx_foko_chat_jwt_public_key(ngx_conf_t *cf,
    ngx_foko_chat_jwt_conf_t *jcf, ngx_str_t *file);
static ngx_uint_t ngx_foko_chat_jwt_is_p256(EVP_PKEY *pkey);
static int ngx_foko_chat_jwt_no_password(char *buf, int size, int rwflag,
    void *u);
static ngx_int_t ngx_foko_chat_jwt_decode(ngx_foko_chat_jwt_conf_t *conf,
    ngx_str_t *token, const char *kind, ngx_foko_chat_claims_t *claims,
    ngx_log_t *log);


/*
 * Access tokens verified lately, per worker: a client sends the same token
 * with every request, and decoding it (base64, two JSON documents, the
 * signature) took a sixth of a worker's CPU per posted message.  Only a
 * token byte for byte equal to one that verified is taken from here, and
 * only until it expires; a new worker (a reload, a new key) starts empty.
 * The comparison takes the same time wherever the bytes differ.  Used on
 * the event loop only.
 */

#define NGX_FOKO_CHAT_JWT_CACHE_SLOTS  256
#define NGX_FOKO_CHAT_JWT_CACHE_TOKEN  512

typedef struct {
    size_t                     len;
    u_char                     token[NGX_FOKO_CHAT_JWT_CACHE_TOKEN];
    ngx_foko_chat_claims_t     claims;
} ngx_foko_chat_jwt_cached_t;


static ngx_foko_chat_jwt_cached_t  *ngx_foko_chat_jwt_cache;


static ngx_foko_chat_jwt_conf_t *
ngx_foko_chat_jwt_conf(ngx_conf_t *cf, ngx_foko_chat_main_conf_t *fmcf)
{
    if (fmcf->jwt == NULL) {
        fmcf->jwt = ngx_pcalloc(cf->pool, sizeof(ngx_foko_chat_jwt_conf_t));
        if (fmcf->jwt == NULL) {
            return NULL;
        }

        fmcf->jwt->alg = JWT_ALG_NONE;
        fmcf->jwt->ttl = NGX_CONF_UNSET;
    }

    return fmcf->jwt;
}


char *
ngx_foko_chat_jwt_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_foko_chat_main_conf_t  *fmcf = conf;

    ngx_str_t                 *value;
    ngx_foko_chat_jwt_conf_t  *jcf;

    jcf = ngx_foko_chat_jwt_conf(cf, fmcf);
    if (jcf == NULL) {
        return NGX_CONF_ERROR;
    }

    if (jcf->alg != JWT_ALG_NONE) {
        return "is duplicate or conflicts with \"foko_chat_jwt_key_file\"";
    }

    value = cf->args->elts;

    if (value[1].len < NGX_FOKO_CHAT_JWT_SECRET_MIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must be at least %d bytes long",
                           &cmd->name, NGX_FOKO_CHAT_JWT_SECRET_MIN);
        return NGX_CONF_ERROR;
    }

    jcf->alg = JWT_ALG_HS256;
    jcf->sign_key = value[1];
    jcf->verify_key = value[1];

    return NGX_CONF_OK;
}


/*
 * The key file holds a private key, RSA (RS256) or EC P-256 (ES256); the
 * public key that verification needs is derived from it here.
 */

char *
ngx_foko_chat_jwt_key_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_foko_chat_main_conf_t  *fmcf = conf;

    ngx_str_t                 *value, file;
    ngx_foko_chat_jwt_conf_t  *jcf;

    jcf = ngx_foko_chat_jwt_conf(cf, fmcf);
    if (jcf == NULL) {
        return NGX_CONF_ERROR;
    }

    if (jcf->alg != JWT_ALG_NONE) {
        return "is duplicate or conflicts with \"foko_chat_jwt_secret\"";
    }

    value = cf->args->elts;
    file = value[1];

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_foko_chat_jwt_public_key(cf, jcf, &file) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_foko_chat_jwt_public_key(ngx_conf_t *cf, ngx_foko_chat_jwt_conf_t *jcf,
    ngx_str_t *file)
{
    int        type;
    BIO       *in, *out;
    char      *data;
    long       len;
    EVP_PKEY  *pkey;
    ngx_int_t  rc;

    rc = NGX_ERROR;
    pkey = NULL;
    out = NULL;

    in = BIO_new_file((char *) file->data, "r");
    if (in == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"foko_chat_jwt_key_file\": cannot open \"%V\"",
                           file);
        return NGX_ERROR;
    }

    /* no pass phrase prompt: an encrypted key is refused */

    pkey = PEM_read_bio_PrivateKey(in, NULL, ngx_foko_chat_jwt_no_password,
                                   NULL);
    if (pkey == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"foko_chat_jwt_key_file\": \"%V\" holds no "
                           "unencrypted PEM private key", file);
        goto done;
    }

    type = EVP_PKEY_base_id(pkey);

    if (type == EVP_PKEY_RSA) {
        jcf->alg = JWT_ALG_RS256;

    } else if (type == EVP_PKEY_EC
               && ngx_foko_chat_jwt_is_p256(pkey))
    {
        jcf->alg = JWT_ALG_ES256;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"foko_chat_jwt_key_file\": \"%V\" is neither "
                           "an RSA nor an EC P-256 key", file);
        goto done;
    }

    /* the private key, as PEM, for signing */

    out = BIO_new(BIO_s_mem());
    if (out == NULL || !PEM_write_bio_PrivateKey(out, pkey, NULL, NULL, 0,
                                                 NULL, NULL))
    {
        goto failed;
    }

    len = BIO_get_mem_data(out, &data);

    jcf->sign_key.data = ngx_pstrdup(cf->pool,
                                     &(ngx_str_t) { len, (u_char *) data });
    jcf->sign_key.len = len;

    /* and the public key, for verifying */

    (void) BIO_reset(out);

    if (!PEM_write_bio_PUBKEY(out, pkey)) {
        goto failed;
    }

    len = BIO_get_mem_data(out, &data);

    jcf->verify_key.data = ngx_pstrdup(cf->pool,
                                       &(ngx_str_t) { len, (u_char *) data });
    jcf->verify_key.len = len;

    if (jcf->sign_key.data == NULL || jcf->verify_key.data == NULL) {
        goto done;
    }

    rc = NGX_OK;
    goto done;

failed:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"foko_chat_jwt_key_file\": cannot encode the key "
                       "of \"%V\"", file);

done:

    if (out) {
        BIO_free(out);
    }

    if (pkey) {
        EVP_PKEY_free(pkey);
    }

    BIO_free(in);

    return rc;
}


static int
ngx_foko_chat_jwt_no_password(char *buf, int size, int rwflag, void *u)
{
    return 0;
}


/* ES256 is ECDSA on P-256 only; other 256-bit curves do not qualify */

static ngx_uint_t
ngx_foko_chat_jwt_is_p256(EVP_PKEY *pkey)
{
#if (OPENSSL_VERSION_NUMBER >= 0x30000000L)

    char    name[64];
    size_t  len;

    if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME,
                                        name, sizeof(name), &len))
    {
        return 0;
    }

    return ngx_strcmp(name, SN_X9_62_prime256v1) == 0
           || ngx_strcmp(name, "P-256") == 0;

#else

    const EC_KEY  *ec;

    ec = EVP_PKEY_get0_EC_KEY(pkey);

    return ec != NULL
           && EC_GROUP_get_curve_name(EC_KEY_get0_group(ec))
              == NID_X9_62_prime256v1;
#endif
}


char *
ngx_foko_chat_jwt_ttl(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_foko_chat_main_conf_t  *fmcf = conf;

    ngx_str_t                 *value;
    ngx_foko_chat_jwt_conf_t  *jcf;

    jcf = ngx_foko_chat_jwt_conf(cf, fmcf);
    if (jcf == NULL) {
        return NGX_CONF_ERROR;
    }

    if (jcf->ttl != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    jcf->ttl = ngx_parse_time(&value[1], 1);

    if (jcf->ttl == (time_t) NGX_ERROR || jcf->ttl < 60) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\": expected a "
                           "time of at least 1m", &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_foko_chat_jwt_init_conf(ngx_conf_t *cf, ngx_foko_chat_main_conf_t *fmcf)
{
    ngx_foko_chat_jwt_conf_t  *jcf;

    jcf = ngx_foko_chat_jwt_conf(cf, fmcf);
    if (jcf == NULL) {
        return NGX_CONF_ERROR;
    }

    if (jcf->alg == JWT_ALG_NONE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"foko_chat_jwt_secret\" or "
                           "\"foko_chat_jwt_key_file\" is required");
        return NGX_CONF_ERROR;
    }

    if (jcf->ttl == NGX_CONF_UNSET) {
        jcf->ttl = NGX_FOKO_CHAT_JWT_TTL;
    }

    return NGX_CONF_OK;
}


char *
ngx_foko_chat_jwt_issue(ngx_foko_chat_jwt_conf_t *conf, const char *kind,
    ngx_foko_chat_claims_t *claims, time_t ttl)
{
    char      *token;
    jwt_t     *jwt;
    time_t     now;
    ngx_int_t  err;

    if (jwt_new(&jwt) != 0) {
        return NULL;
    }

    now = ngx_time();

    err = jwt_add_grant(jwt, "typ", kind)
          | jwt_add_grant(jwt, "sub", (char *) claims->sub)
          | jwt_add_grant_int(jwt, "iat", now)
          | jwt_add_grant_int(jwt, "exp", now + ttl);

    if (claims->name_len) {
        err |= jwt_add_grant(jwt, "name", (char *) claims->name);
    }

    if (claims->ver >= 0) {
        err |= jwt_add_grant_int(jwt, "ver", claims->ver);
    }

    err |= jwt_set_alg(jwt, conf->alg, conf->sign_key.data,
                       conf->sign_key.len);

    token = err ? NULL : jwt_encode_str(jwt);

    jwt_free(jwt);

    return token;
}


ngx_int_t
ngx_foko_chat_jwt_verify(ngx_foko_chat_jwt_conf_t *conf, ngx_str_t *token,
    const char *kind, ngx_foko_chat_claims_t *claims, ngx_log_t *log)
{
    ngx_int_t                    rc;
    ngx_foko_chat_jwt_cached_t  *hit;

    if (ngx_strcmp(kind, NGX_FOKO_CHAT_TOKEN_ACCESS) != 0
        || token->len == 0 || token->len > NGX_FOKO_CHAT_JWT_CACHE_TOKEN)
    {
        return ngx_foko_chat_jwt_decode(conf, token, kind, claims, log);
    }

    if (ngx_foko_chat_jwt_cache == NULL) {
        ngx_foko_chat_jwt_cache = ngx_calloc(NGX_FOKO_CHAT_JWT_CACHE_SLOTS
                                         * sizeof(ngx_foko_chat_jwt_cached_t),
                                         log);
        if (ngx_foko_chat_jwt_cache == NULL) {
            return ngx_foko_chat_jwt_decode(conf, token, kind, claims, log);
        }
    }

    hit = &ngx_foko_chat_jwt_cache[ngx_murmur_hash2(token->data, token->len)
                                   % NGX_FOKO_CHAT_JWT_CACHE_SLOTS];

    if (hit->len == token->len
        && CRYPTO_memcmp(hit->token, token->data, token->len) == 0
        && hit->claims.exp > ngx_time())
    {
        *claims = hit->claims;
        return NGX_OK;
    }

    rc = ngx_foko_chat_jwt_decode(conf, token, kind, claims, log);

    if (rc == NGX_OK) {
        hit->len = token->len;
        ngx_memcpy(hit->token, token->data, token->len);
        hit->claims = *claims;
    }

    return rc;
}


static ngx_int_t
ngx_foko_chat_jwt_decode(ngx_foko_chat_jwt_conf_t *conf, ngx_str_t *token,
    const char *kind, ngx_foko_chat_claims_t *claims, ngx_log_t *log)
{
    long         exp, ver;
    size_t       len;
    jwt_t       *jwt;
    u_char       buf[NGX_FOKO_CHAT_JWT_MAX_LEN + 1];
    ngx_int_t    rc;
    const char  *typ, *sub, *name;

    if (token->len == 0 || token->len > NGX_FOKO_CHAT_JWT_MAX_LEN) {
        return NGX_DECLINED;
    }

    ngx_memcpy(buf, token->data, token->len);
    buf[token->len] = '\0';

    if (jwt_decode(&jwt, (char *) buf, conf->verify_key.data,
                   conf->verify_key.len)
        != 0)
    {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log, 0,
                       "foko chat: token does not decode or verify");
        return NGX_DECLINED;
    }

    rc = NGX_DECLINED;

    if (jwt_get_alg(jwt) != conf->alg) {
        goto done;
    }

    errno = 0;
    exp = jwt_get_grant_int(jwt, "exp");

    if (errno != 0 || exp <= 0 || exp <= ngx_time()) {
        goto done;
    }

    typ = jwt_get_grant(jwt, "typ");
    if (typ == NULL || ngx_strcmp(typ, kind) != 0) {
        goto done;
    }

    sub = jwt_get_grant(jwt, "sub");
    if (sub == NULL
        || !ngx_foko_chat_oid_valid((u_char *) sub, ngx_strlen(sub)))
    {
        goto done;
    }

    ngx_memcpy(claims->sub, sub, NGX_FOKO_CHAT_OID_LEN + 1);

    name = jwt_get_grant(jwt, "name");
    len = name ? ngx_strlen(name) : 0;

    if (len > NGX_FOKO_CHAT_USERNAME_MAX) {
        goto done;
    }

    ngx_memcpy(claims->name, name ? name : "", len + 1);
    claims->name_len = len;

    errno = 0;
    ver = jwt_get_grant_int(jwt, "ver");
    claims->ver = (errno == 0) ? ver : -1;

    claims->exp = exp;

    rc = NGX_OK;

done:

    jwt_free(jwt);

    return rc;
}

#!/bin/sh
# Renders the configuration from the environment and runs nginx in the
# foreground.
set -eu

: "${FOKO_MONGO_URI:?set FOKO_MONGO_URI}"
: "${FOKO_JWT_SECRET:?set FOKO_JWT_SECRET (at least 32 bytes)}"
: "${FOKO_PUBLIC_URL:=http://localhost:8080}"
export FOKO_MONGO_URI FOKO_JWT_SECRET FOKO_PUBLIC_URL

envsubst '${FOKO_MONGO_URI} ${FOKO_JWT_SECRET} ${FOKO_PUBLIC_URL}' \
    < /etc/nginx/nginx.conf.template > /etc/nginx/nginx.conf

nginx -t
exec nginx -g 'daemon off;'

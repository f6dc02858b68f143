# ---------------------------------------------------------------------------------------------
# Source: EC2 instance metadata service
# ---------------------------------------------------------------------------------------------

IMDS_HOST=
IMDS_PORT=80
IMDS_TOKEN=
HTTP_CODE=000

# http_request METHOD PATH OUTFILE [HEADER]: sets HTTP_CODE (000 when nothing answered) and
# HTTP_NO_CONNECT (1 when not even a connection was made), returns 0 on 200. curl when
# present; else wget for GETs (busybox wget cannot PUT, and its -T crashes in 1.35: timeout(1)
# bounds it); else a raw HTTP/1.0 exchange through nc. Every wait is a few seconds at most.
http_request() {
    _hr_method=$1
    _hr_path=$2
    _hr_out=$3
    _hr_hdr=${4:-}
    HTTP_CODE=000
    HTTP_NO_CONNECT=0
    : >"$_hr_out"
    if have curl; then
        if [ -n "$_hr_hdr" ]; then
            HTTP_CODE=$(curl -s -o "$_hr_out" -w '%{http_code}' --connect-timeout 2 -m 4 \
                -X "$_hr_method" -H "$_hr_hdr" "$IMDS_BASE$_hr_path" 2>/dev/null)
        else
            HTTP_CODE=$(curl -s -o "$_hr_out" -w '%{http_code}' --connect-timeout 2 -m 4 \
                -X "$_hr_method" "$IMDS_BASE$_hr_path" 2>/dev/null)
        fi
        # curl 6: no such host, 7: refused or unreachable, 28: timed out
        case $? in 6 | 7 | 28) HTTP_NO_CONNECT=1 ;; esac
        [ -n "$HTTP_CODE" ] || HTTP_CODE=000
    elif [ "$_hr_method" = GET ] && have wget; then
        # -S prints the status lines (busybox and GNU wget alike), which is how the code is seen
        if [ -n "$_hr_hdr" ]; then
            with_timeout 3 wget -S -O "$_hr_out" --header "$_hr_hdr" "$IMDS_BASE$_hr_path" >"$WORK/wget.err" 2>&1
        else
            with_timeout 3 wget -S -O "$_hr_out" "$IMDS_BASE$_hr_path" >"$WORK/wget.err" 2>&1
        fi
        HTTP_CODE=$(sed -n 's/.*HTTP\/1\.[01] \([0-9][0-9][0-9]\).*/\1/p' "$WORK/wget.err" | tail -n 1)
        if [ -z "$HTTP_CODE" ]; then
            HTTP_CODE=000
            HTTP_NO_CONNECT=1
        fi
    elif have nc; then
        _hr_hostline=$IMDS_HOST
        [ "$IMDS_PORT" = 80 ] || _hr_hostline=$IMDS_HOST:$IMDS_PORT
        {
            printf '%s %s HTTP/1.0\r\nHost: %s\r\n' "$_hr_method" "$_hr_path" "$_hr_hostline"
            [ -n "$_hr_hdr" ] && printf '%s\r\n' "$_hr_hdr"
            [ "$_hr_method" = PUT ] && printf 'Content-Length: 0\r\n'
            printf '\r\n'
        } | with_timeout 4 nc -w 2 "$IMDS_HOST" "$IMDS_PORT" >"$WORK/http.raw" 2>/dev/null
        # nc fails when it cannot connect; a server that closes without a word leaves it at 0
        _hr_nc=$?
        HTTP_CODE=$(head -n 1 "$WORK/http.raw" | tr -d '\r' | awk '$1 ~ /^HTTP\// { print $2 }')
        [ -n "$HTTP_CODE" ] || HTTP_CODE=000
        [ "$_hr_nc" != 0 ] && [ ! -s "$WORK/http.raw" ] && HTTP_NO_CONNECT=1
        # the body starts after the first empty line; count header bytes to cut it binary-safe
        _hr_hlen=$(awk '{ n += length($0) + 1 } /^\r?$/ { print n; found = 1; exit } END { if (!found) print 0 }' "$WORK/http.raw")
        if [ "${_hr_hlen:-0}" -gt 0 ]; then
            tail -c +"$((_hr_hlen + 1))" "$WORK/http.raw" >"$_hr_out"
        fi
    else
        log "neither curl, wget nor nc is installed: cannot reach the metadata service"
    fi
    [ "$HTTP_CODE" = 200 ]
}

imds_get() {  # PATH OUTFILE
    if [ -n "$IMDS_TOKEN" ]; then
        http_request GET "$1" "$2" "X-aws-ec2-metadata-token: $IMDS_TOKEN"
    else
        http_request GET "$1" "$2"
    fi
}

# IMDSv2: PUT /latest/api/token with a TTL. 404/403/405, no answer, or any other refusal means
# IMDSv1 (botocore's rule); a service that requires tokens then answers GETs with 401.
imds_get_token() {
    IMDS_TOKEN=
    if http_request PUT /latest/api/token "$WORK/ec2.token" "X-aws-ec2-metadata-token-ttl-seconds: 21600"; then
        _it=$(head -c 1024 "$WORK/ec2.token" | tr -d '\r\n')
        case $_it in
            '' | *[!A-Za-z0-9+/=_.-]*) log "IMDSv2 answered with an unusable token; using IMDSv1" ;;
            *)
                IMDS_TOKEN=$_it
                log "IMDSv2 session token obtained"
                ;;
        esac
    else
        case $HTTP_CODE in
            404 | 403 | 405) log "IMDSv2 not offered (HTTP $HTTP_CODE to the token request); using IMDSv1" ;;
            000)
                if [ "$HTTP_NO_CONNECT" = 1 ]; then
                    log "no connection to $IMDS_BASE for an IMDSv2 token; trying IMDSv1"
                else
                    log "no answer to the IMDSv2 token request; trying IMDSv1"
                fi
                ;;
            *) log "IMDSv2 token request refused (HTTP $HTTP_CODE); trying IMDSv1" ;;
        esac
    fi
}

source_ec2() {
    case $IMDS_BASE in
        http://*) ;;
        *)
            log "metadata service URL $IMDS_BASE is not http://; skipped"
            return 1
            ;;
    esac
    IMDS_BASE=${IMDS_BASE%/}
    _ec_hp=${IMDS_BASE#http://}
    _ec_hp=${_ec_hp%%/*}
    IMDS_HOST=${_ec_hp%%:*}
    IMDS_PORT=80
    case $_ec_hp in *:*) IMDS_PORT=${_ec_hp##*:} ;; esac
    if ! network_for_metadata && [ "$DRYRUN" != 1 ]; then
        log "no network: the EC2 metadata service cannot be reached"
        return 1
    fi
    imds_get_token
    _ec_unreachable=$HTTP_NO_CONNECT
    _ec_try=1
    while ! imds_get /latest/meta-data/instance-id "$WORK/ec2.id"; do
        case $HTTP_CODE in
            401)
                log "the metadata service requires an IMDSv2 token and none could be obtained"
                return 1
                ;;
            000 | 5*) ;;
            *)
                log "metadata service at $IMDS_BASE: HTTP $HTTP_CODE for meta-data/instance-id"
                return 1
                ;;
        esac
        # nothing listens at all (twice): do not keep the boot waiting
        [ "$HTTP_NO_CONNECT" = 1 ] && [ "$_ec_unreachable" = 1 ] && _ec_try=3
        if [ "$_ec_try" -ge 3 ]; then
            log "no EC2 metadata service at $IMDS_BASE"
            return 1
        fi
        _ec_try=$((_ec_try + 1))
        sleep 1
    done
    CTX_ID=$(first_line "$WORK/ec2.id")
    if imds_get /latest/meta-data/local-hostname "$WORK/ec2.hn" || imds_get /latest/meta-data/hostname "$WORK/ec2.hn"; then
        CTX_HOST=$(first_line "$WORK/ec2.hn")
    fi
    # public-keys/ lists "N=name" lines; each key lives at public-keys/N/openssh-key
    if imds_get /latest/meta-data/public-keys/ "$WORK/ec2.keys"; then
        for _ec_k in $(sed -n 's/^\([0-9][0-9]*\)=.*/\1/p' "$WORK/ec2.keys" | head -n 64); do
            if imds_get "/latest/meta-data/public-keys/$_ec_k/openssh-key" "$WORK/ec2.key"; then
                add_keys <"$WORK/ec2.key"
            fi
        done
    fi
    if imds_get /latest/user-data "$WORK/ec2.ud"; then
        take_user_data "$WORK/ec2.ud"
    fi
    return 0
}


# The Debian package: scripts/deb.sh packages the module under test; the
# package has the control fields, maintainer scripts and layout of Debian's
# own libnginx-mod-* packages.  As root, it is installed with dpkg, the
# stock nginx loads it from /etc/nginx/modules-enabled (nginx -t, then a
# real start answering the metrics), an upgrade keeps an administrator's
# choice to disable it, and remove then purge leave nothing behind.

use strict;
use warnings;

use Fcntl qw(:flock);
use File::Spec;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use Test::More;
use Time::HiRes qw(sleep);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;

my $pkg = 'libnginx-mod-foko-chat';
my $so = '/usr/lib/nginx/modules/ngx_foko_chat_module.so';
my $available = '/usr/share/nginx/modules-available/mod-foko-chat.conf';
my $enabled = '/etc/nginx/modules-enabled/50-mod-foko-chat.conf';

plan skip_all => 'not a Debian system (dpkg-deb, dpkg-shlibdeps missing)'
    unless -x '/usr/bin/dpkg-deb' && -x '/usr/bin/dpkg-shlibdeps';

my ($module) = split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '';
plan skip_all => 'TEST_NGINX_LOAD_MODULES names no module'
    unless $module && -f $module;

my $root = File::Spec->rel2abs('.');
my $dir = tempdir(CLEANUP => !$ENV{KEEP});

sub run {
    my $out = `@_ 2>&1`;
    return ($? >> 8, $out);
}

# the package

my ($rc, $out) = run("FOKO_DEB_MODULE='$module' FOKO_DEB_DIR='$dir'"
                     . " '$root/scripts/deb.sh'");
is $rc, 0, 'scripts/deb.sh builds a package' or diag $out;

my ($version) = `dpkg-parsechangelog -l '$root/packaging/debian/changelog' -S Version`
    =~ /(\S+)/;
chomp(my $arch = `dpkg --print-architecture`);
my $deb = "$dir/${pkg}_${version}_$arch.deb";
ok -f $deb, "named ${pkg}_${version}_$arch.deb";

my %field = map { /^ ?([\w-]+): (.*)$/ ? ($1 => $2) : () }
    split /\n/, `dpkg-deb -f '$deb'`;
is $field{Package}, $pkg, 'Package';
is $field{Version}, $version, 'Version, from packaging/debian/changelog';
is $field{Architecture}, $arch, 'Architecture';
is $field{Section}, 'httpd', 'Section httpd, as Debian\'s modules';
is $field{'Multi-Arch'}, 'foreign', 'Multi-Arch: foreign';
is $field{Recommends}, 'nginx', 'Recommends: nginx';

my ($abi) = `dpkg-query -W -f '\${Provides}' nginx 2>/dev/null`
    =~ /(nginx-abi-[^\s,]+)/;
SKIP: {
    skip 'no nginx package installed', 1 unless $abi;
    like $field{Depends}, qr/^\Q$abi\E,/,
        "Depends first on the installed nginx's $abi";
}
for my $lib (qw(libc6 libmongoc-1.0-0 libjansson4 libjwt0 libcurl4
                libargon2-1))
{
    like $field{Depends}, qr/(?:^|, )\Q$lib\E \(>= [^)]+\)/,
        "Depends on $lib, versioned by dpkg-shlibdeps";
}

my %files = map {
    my @f = split ' ', $_, 6;
    ($f[5] =~ s{^\./}{/}r =~ s{/$}{}r => { mode => $f[0], owner => $f[1] })
} split /\n/, `dpkg-deb -c '$deb'`;
for my $path ($so, $available, "/usr/share/doc/$pkg/copyright",
              "/usr/share/doc/$pkg/changelog.Debian.gz")
{
    is $files{$path}{mode}, '-rw-r--r--', "$path, mode 644";
}
is_deeply [grep { $files{$_}{owner} ne 'root/root' } sort keys %files], [],
    'every file is root:root';
is_deeply [grep { m{^/etc/} } keys %files], [],
    'nothing in /etc: the link is the maintainer scripts\' business';

my $control = "$dir/control";
($rc) = run("dpkg-deb -e '$deb' '$control'");
ok -x "$control/$_", "maintainer script $_" for qw(postinst prerm postrm);
ok -f "$control/md5sums", 'md5sums';

($rc, $out) = run("dpkg-deb --fsys-tarfile '$deb' | tar -xOf - ."
                  . "$available");
is $out, "load_module $so;\n", 'the conf loads the module by its full path';

($rc, $out) = run("dpkg-deb --fsys-tarfile '$deb' | tar -xOf - .$so"
                  . " | cmp -s - '$module'");
isnt $rc, 0, 'the packaged module is stripped';

# installed into this machine

SKIP: {
    skip 'dpkg -i needs root', 1 if $> != 0;
    skip 'no nginx package installed', 1 unless $abi;

    # two suites on one machine take turns
    open my $lock, '>', '/tmp/foko-chat-deb-test.lock' or die "lock: $!\n";
    flock $lock, LOCK_EX or die "flock: $!\n";

    my $status = `dpkg-query -W -f '\${Status}' $pkg 2>/dev/null`;
    skip "$pkg is installed already ($status): left alone", 1
        if $status =~ /installed|config-files/;

    my $installed = 0;
    END { system "dpkg --purge $pkg > /dev/null 2>&1" if $installed }

    sub dpkg {
        my $cmd = shift;
        my ($rc, $out);
        for (1 .. 30) {
            ($rc, $out) = run("dpkg $cmd");
            last unless $out =~ /lock/i && $rc;
            sleep 1;
        }
        return ($rc, $out);
    }

    ($rc, $out) = dpkg("-i '$deb'");
    $installed = 1;
    is $rc, 0, 'dpkg -i installs it' or diag $out;
    like `dpkg-query -W -f '\${Status}' $pkg`, qr/^install ok installed$/,
        'installed';
    ok -f $so, "$so is there";
    is readlink($enabled), $available, "$enabled links to $available";

    # the stock nginx with a configuration of its own, loading the module
    # through the modules-enabled link

    my $prefix = "$dir/nginx";
    mkdir $prefix;
    mkdir "$prefix/logs";
    my $port = free_port();
    # a database of its own: the workers have nothing of the suite's to
    # warm up from, so a stop is not held by a warm-up in progress
    my $uri = $ENV{TEST_NGINX_MONGO_URI} // 'mongodb://127.0.0.1:1/x';
    $uri =~ s{^(mongodb://[^/?]+)(?:/[^?]*)?}{$1/foko_chat_deb52};
    my $conf = sub {
        my $include = shift;
        write_file("$prefix/nginx.conf", <<"_EOC_");
$include
pid $prefix/logs/nginx.pid;
error_log $prefix/logs/error.log info;
@{[ $> == 0 ? 'user root;' : '' ]}

events {
    worker_connections 64;
}

http {
    access_log off;
    client_body_temp_path $prefix/client_body_temp;
    proxy_temp_path $prefix/proxy_temp;
    fastcgi_temp_path $prefix/fastcgi_temp;
    uwsgi_temp_path $prefix/uwsgi_temp;
    scgi_temp_path $prefix/scgi_temp;

    foko_chat_mongo_uri $uri;

    server {
        listen 127.0.0.1:$port;

        location = /metrics {
            foko_chat_status prometheus;
        }
    }
}
_EOC_
    };
    my $nginx = nginx_binary();
    my $t = "'$nginx' -p '$prefix/' -c '$prefix/nginx.conf'"
        . " -e '$prefix/logs/error.log'";

    $conf->('');
    ($rc, $out) = run("$t -t");
    isnt $rc, 0, 'without the module, foko_chat_status is unknown';
    like $out, qr/unknown directive "foko_chat_mongo_uri"/, 'says nginx -t';

    $conf->("include $enabled;");
    ($rc, $out) = run("$t -t");
    is $rc, 0, 'with the modules-enabled file, nginx -t passes'
        or diag $out;
    like $out, qr/test is successful/, 'says nginx -t';

    ($rc, $out) = run($t);
    is $rc, 0, 'the stock nginx starts with the installed module'
        or diag $out;
    my $res;
    for (1 .. 50) {
        $res = HTTP::Tiny->new(timeout => 2)
            ->get("http://127.0.0.1:$port/metrics");
        last if $res->{status} != 599;
        sleep 0.1;
    }
    is $res->{status}, 200, 'and answers the metrics';
    like $res->{content}, qr/^foko_chat_zone_size_bytes \d+$/m,
        'in the text format';
    open my $fh, '<', "$prefix/logs/nginx.pid";
    my ($pid) = ($fh ? <$fh> // '' : '') =~ /(\d+)/;
    if ($pid) {
        kill QUIT => $pid;
        for (1 .. 400) {
            last unless kill 0 => $pid;
            sleep 0.05;
        }
    }
    ok $pid && !kill(0 => $pid), 'and stops';

    # an upgrade (the same package again) keeps the link, and an
    # administrator's choice to drop it

    ($rc, $out) = dpkg("-i '$deb'");
    is $rc, 0, 'installed again' or diag $out;
    is readlink($enabled), $available, 'the link stays';

    unlink $enabled;
    ($rc, $out) = dpkg("-i '$deb'");
    is $rc, 0, 'installed again without the link' or diag $out;
    ok !-e $enabled && !-l $enabled, 'a removed link stays removed';
    symlink $available, $enabled;

    # remove, then purge

    ($rc, $out) = dpkg("-r $pkg");
    is $rc, 0, 'dpkg -r removes it' or diag $out;
    ok !-e $so, "$so is gone";
    ok !-e $available, "$available is gone";
    ok !-l $enabled, "$enabled is gone: nginx no longer loads it";
    ok -l "$enabled.removed", 'kept aside for a reinstall, as Debian does';

    ($rc, $out) = dpkg("-P $pkg");
    is $rc, 0, 'dpkg -P purges it' or diag $out;
    ok !-l "$enabled.removed", 'the kept link is gone too';
    is_deeply [glob '/etc/nginx/modules-enabled/*foko*'], [],
        'nothing of the module in modules-enabled';
    isnt system("dpkg-query -W $pkg > /dev/null 2>&1"), 0,
        'dpkg knows the package no more';
    $installed = 0;
}

done_testing;

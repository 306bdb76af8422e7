# Accounts stored before usernames were unique get their username_key at
# start, oldest first, and a slow MongoDB at start does not stop that:
# FerretDB paused while the backfill runs makes the worker retry (at
# warn) until it is done (once at notice).  Of two old accounts whose
# names fold to one key the older keeps it, the younger stays without
# one; both still sign in, and the name is refused to a new account.
# The old accounts are written straight into the database with pymongo.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use FokoChat::Nginx qw(:all);
use FokoChat::Api;
use FokoChat::Server;

plan skip_all => 'python3-pymongo is not installed (scripts/test.sh installs it)'
    if system('/usr/bin/python3', '-c', 'import pymongo') != 0;

my ($uri, $db) = ferretdb_start();

# one or more JSON lines from a pymongo script run on the database
sub mongo {
    my ($script, @args) = @_;
    my $code = "import sys, json, pymongo, bson\n"
        . "db = pymongo.MongoClient(sys.argv[1]).get_default_database()\n"
        . $script;
    open my $fh, '-|', '/usr/bin/python3', '-c', $code, $uri, @args
        or die "python3: $!\n";
    my @out = map { json()->decode($_) } <$fh>;
    close $fh or die "the pymongo script failed\n";
    return wantarray ? @out : $out[0];
}

# an account made the usual way, whose hash the old accounts share
start_foko(mongo_uri => $uri);
my $email = unique_email('model');
my (undef, $model) = signup(username => 'model', email => $email);
stop_foko();

my $name = 'Legacy' . int(rand 1e6);
my ($older, $younger) = (unique_email('older'), unique_email('younger'));
my $late = 'Late' . int(rand 1e6);
my $bulk = 300;

mongo(<<'_PY_', $model->{id}, $bulk, $name, $older, $younger, $late);
model = db.users.find_one({'_id': bson.ObjectId(sys.argv[2])})
def old(email, username):
    doc = dict(model, _id=bson.ObjectId(), email=email, username=username)
    doc.pop('username_key')
    return doc
docs = [old('older@x', sys.argv[4]), old('younger@x', sys.argv[4].lower())]
docs[0]['email'], docs[1]['email'] = sys.argv[5], sys.argv[6]
docs += [old('bulk%d@x' % i, 'bulk%d' % i) for i in range(int(sys.argv[3]))]
docs.append(old('late@x', sys.argv[7]))
db.users.insert_many(docs)
print(json.dumps(db.users.count_documents({'username_key': None})))
_PY_

# the backfill runs at start, oldest first: FerretDB stops for 4 s once
# it has keyed the first old account

start_foko(mongo_uri => $uri);
my $deadline = time + 20;
sleep 0.1 until mongo("print(json.dumps(db.users.find_one("
                      . "{'email': sys.argv[2]}).get('username_key')))",
                      $older)
                || time > $deadline;
kill STOP => $db->{pid};
sleep 4;
kill CONT => $db->{pid};

# the newest old account is not keyed yet: its name is taken all the same
my ($status, $res) = api(POST => '/api/auth/signup', {
    email => unique_email('early'), password => 'correct horse',
    username => uc $late }, timeout => 10);
is $status, 409, 'an old name, before its account is keyed: 409';
is $res->{error}{code}, 'username_taken', 'username_taken';

my $left;
$deadline = time + 40;
while (time < $deadline) {
    $left = mongo("print(db.users.count_documents("
                  . "{'username_key': None, 'invited': None}))");
    last if $left <= 1;
    sleep 0.5;
}
is $left, 1, 'every old account has a username_key but the younger twin';
$deadline = time + 10;
sleep 0.2 until grep(/usernames are unique now/, error_log_lines())
                || time > $deadline;

my @log = error_log_lines();
ok grep(/\[warn\].*indexes not created yet, will retry in \d+ s/, @log),
    'the pause was caught: the worker retried at warn';
is scalar(grep /\[notice\].*indexes created, usernames are unique now/,
          @log), 1, 'and said once, at notice, when it was done';
is_deeply [grep /\[(?:error|crit|alert|emerg)\].*(?:index|backfill)/, @log],
    [], 'no error about the indexes or the backfill';

my $keys = mongo(<<'_PY_', $older, $younger);
ix = db.users.index_information().get('username_key_unique', {})
o = db.users.find_one({'email': sys.argv[2]})
y = db.users.find_one({'email': sys.argv[3]})
print(json.dumps({'unique': bool(ix.get('unique')) or bool(ix.get('sparse')),
                  'older': o.get('username_key'),
                  'younger': y.get('username_key'),
                  'late': db.users.find_one({'email': 'late@x'})
                                  .get('username_key'),
                  'bulk7': db.users.find_one({'username': 'bulk7'})
                                   .get('username_key')}))
_PY_
ok $keys->{unique}, 'the unique username_key index exists';
is $keys->{older}, lc $name, 'the older twin keeps the name as its key';
is $keys->{younger}, undef, 'the younger twin is left without a key';
is $keys->{bulk7}, 'bulk7', 'an old account is keyed';
is $keys->{late}, lc $late, 'the newest old account kept its name';

($status, $res) = api(POST => '/api/auth/signup', {
    email => unique_email('late'), password => 'correct horse',
    username => uc $name });
is $status, 409, 'the old name, in another case, on sign-up: 409';
is $res->{error}{code}, 'username_taken', 'username_taken';

for ([older => $older, $name], [younger => $younger, lc $name]) {
    my ($who, $mail, $shown) = @$_;
    ($status, $res) = api(POST => '/api/auth/login',
                          { email => $mail, password => 'correct horse' });
    is $status, 200, "the $who twin signs in";
    is $res->{user}{username}, $shown, "under its own name";
}

error_log_clean('nothing above warn but the pause\'s own lines',
                qr/MongoDB is unreachable/);

stop_foko();

# many old accounts: a stop in the middle of the backfill waits for one
# batch (NGX_FOKO_CHAT_BACKFILL_BATCH accounts), not for all of them

my $many = 600;
mongo(<<'_PY_', $model->{id}, $many);
model = db.users.find_one({'_id': bson.ObjectId(sys.argv[2])})
docs = []
for i in range(int(sys.argv[3])):
    doc = dict(model, _id=bson.ObjectId(), email='many%d@x' % i,
               username='many%d' % i)
    doc.pop('username_key')
    docs.append(doc)
db.users.insert_many(docs)
print(json.dumps(len(docs)))
_PY_

start_foko(mongo_uri => $uri);
$deadline = time + 20;
sleep 0.1 until mongo("print(json.dumps(db.users.find_one("
                      . "{'email': 'many0\@x'}).get('username_key')))")
                || time > $deadline;
my $pid = FokoChat::Nginx::nginx_pid();
my $t0 = time;
kill QUIT => $pid;
sleep 0.05 while FokoChat::Nginx::alive($pid) && time - $t0 < 30;
my $took = time - $t0;
ok !FokoChat::Nginx::alive($pid), sprintf 'nginx exits on SIGQUIT during the backfill '
                           . '(%.1f s)', $took;
cmp_ok $took, '<', 10, 'within one batch, not the whole backfill';
$left = mongo("print(db.users.count_documents({'email': "
              . "{'\$regex': '^many'}, 'username_key': None}))");
cmp_ok $left, '>', 0, "the stop came before the backfill's end "
                      . "($left of $many left)";
stop_foko();

done_testing;

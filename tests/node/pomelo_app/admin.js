// The admin console's side of the master (what `pomelo list` and the web admin use):
//   node admin.js <master port> <moduleId> '<JSON request body>'
// connects as the admin user of config/adminUser.json, sends one request and prints
// {"error": ..., "data": ...} as the last line of its stdout.
'use strict';
var AdminClient = require('pomelo-admin').adminClient;

var port = Number(process.argv[2]);
var moduleId = process.argv[3];
var body = JSON.parse(process.argv[4] || '{}');
var client = new AdminClient({username: 'admin', password: 'admin', md5: true});
client.connect('test_admin_' + Date.now(), '127.0.0.1', port, function(err) {
  if (err) {
    console.log(JSON.stringify({error: String(err), data: null}));
    process.exit(1);
  }
  client.request(moduleId, body, function(err, data) {
    console.log(JSON.stringify({error: err ? (err.message || err) : null, data: data}));
    process.exit(0);
  });
});

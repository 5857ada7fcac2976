// What relayRemote.note received, in order (GET /notes of app.js's hook).
'use strict';
module.exports = [];

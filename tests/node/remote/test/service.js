// Remote service "service" of the Node test server (pomelo-loader calls the factory).
'use strict';

module.exports = function(app) {
  return new Service(app);
};

function Service(app) {
  this.app = app;
}

Service.prototype.echo = function(msg, cb) {
  cb(null, msg);
};

Service.prototype.add = function(a, b, cb) {
  cb(null, a + b);
};

Service.prototype.slowEcho = function(msg, ms, cb) {
  setTimeout(function() { cb(null, msg); }, ms);
};

// cb(err): a JavaScript Error, which pomelo-rpc sends as {stack} (its .msg is undefined)
Service.prototype.fail = function(message, cb) {
  cb(new Error(message));
};

Service.prototype.failType = function(message, cb) {
  cb(new TypeError(message));
};

// A method that throws: the acceptor catches it and sends resp [{stack}]
Service.prototype.throws = function(message, cb) {
  throw new Error(message);
};

// Several results: cb(null, a, b, c)
Service.prototype.multi = function(a, b, c, cb) {
  cb(null, a, b, c);
};

// No result at all: cb()
Service.prototype.nothing = function(cb) {
  cb();
};

Service.prototype.whoami = function(cb) {
  cb(null, this.app.serverId);
};

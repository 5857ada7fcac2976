// The connectors' handler: a player's first request, and a view of its session.
'use strict';
module.exports = function(app) {
  return new EntryHandler(app);
};

var EntryHandler = function(app) {
  this.app = app;
};

// {uid?, area?}: bind the session to uid (if given), set the area server that serves
// its area.* requests (if given; see app.js areaRoute).
EntryHandler.prototype.entry = function(msg, session, next) {
  var self = this;
  var done = function(err) {
    if (err) {
      return next(null, {code: 500, error: err.message});
    }
    next(null, {code: 200, sid: session.id, server: self.app.getServerId()});
  };
  if (msg.area) {
    session.set('area', msg.area);
  }
  if (!msg.uid) {
    return session.pushAll(done);
  }
  session.bind(msg.uid, function(err) {
    if (err) {
      return done(err);
    }
    session.pushAll(done);
  });
};

// The session as this connector holds it: {sid, uid, settings, server}.
EntryHandler.prototype.session = function(msg, session, next) {
  next(null, {code: 200, sid: session.id, uid: session.uid || null,
              settings: session.settings, server: this.app.getServerId()});
};

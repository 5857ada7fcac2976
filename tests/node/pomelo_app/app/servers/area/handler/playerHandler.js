// The Node area server's handler (bench/backend.py compares it with the Python one,
// pomelo_rpc/demo_backend/area/handler/playerHandler.py, which does the same).
'use strict';
module.exports = function(app) {
  return new PlayerHandler(app);
};

var PlayerHandler = function(app) {
  this.app = app;
  this.positions = {};
};

// {x, y, push?}: the player's position, kept; with push, onMove pushed to the player.
PlayerHandler.prototype.move = function(msg, session, next) {
  var uid = session.uid;
  this.positions[uid] = [msg.x, msg.y];
  if (msg.push) {
    this.app.get('channelService').pushMessageByUids(
      'onMove', {uid: uid, x: msg.x, y: msg.y}, [{uid: uid, sid: session.frontendId}],
      function() {});
  }
  next(null, {code: 200, x: msg.x, y: msg.y});
};

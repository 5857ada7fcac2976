// The Node area server's handler in the pinus app (bench/backend.py --pinus compares it
// with the Python one, pomelo_rpc/demo_backend/area/handler/playerHandler.py, which
// does the same; tests/node/pomelo_app has its pomelo twin).
'use strict';

class PlayerHandler {
  constructor(app) {
    this.app = app;
    this.positions = {};
  }

  // {x, y, push?}: the player's position, kept; with push, onMove pushed to the player.
  async move(msg, session) {
    const uid = session.uid;
    this.positions[uid] = [msg.x, msg.y];
    if (msg.push) {
      this.app.get('channelService').pushMessageByUids(
        'onMove', {uid: uid, x: msg.x, y: msg.y}, [{uid: uid, sid: session.frontendId}],
        function () {});
    }
    return {code: 200, x: msg.x, y: msg.y};
  }
}

module.exports.default = function (app) {
  return new PlayerHandler(app);
};
